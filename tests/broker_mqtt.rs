//! The broker against real MQTT clients from other projects (mosquitto_pub/mosquitto_sub for
//! 3.1, 3.1.1 and 5; rumqttc), and a raw client for what they cannot express.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS as RQoS;
use tokio::time::{Instant, timeout};
use vmq_broker::mqtt::{
    ConnAckReason, Connect, Disconnect, DisconnectReason, Packet, Properties, Protocol, Publish,
    QoS, SubOptions, Subscribe, Will,
};
use vmq_tests::WAIT;
use vmq_tests::broker::{Raw, start_broker, v4_client};

/// Waits until the broker holds `n` subscriptions.
async fn subscriptions(server: &vmq_broker::Server, n: usize) {
    let deadline = Instant::now() + WAIT;
    while server.engine().subscription_count() < n {
        assert!(Instant::now() < deadline, "subscriptions never reached {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the session of `client_id` has no connection.
async fn offline(server: &vmq_broker::Server, client_id: &str) {
    let deadline = Instant::now() + WAIT;
    while server.engine().is_online("", client_id) {
        assert!(Instant::now() < deadline, "{client_id} still online");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_in_every_protocol_version_and_qos() {
    let (server, addr) = start_broker("").await;
    let port = addr.port().to_string();
    let mut expected = 0;
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("interop/{version}/{qos}");
            let sub = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", qos])
                .args([
                    "-t",
                    &topic,
                    "-C",
                    "1",
                    "-W",
                    "20",
                    "-i",
                    &format!("sub-{version}-{qos}"),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)");
            expected += 1;
            subscriptions(&server, expected).await;
            let status = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", qos])
                .args(["-t", &topic, "-m", &format!("hello {version} {qos}")])
                .status()
                .unwrap();
            assert!(status.success());
            let out = tokio::task::spawn_blocking(move || vmq_tests::wait_with_timeout(sub))
                .await
                .unwrap();
            assert!(out.status.success(), "{version} qos {qos}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("hello {version} {qos}")
            );
            // mosquitto_sub used a clean session: its subscription is gone.
            expected -= 1;
            offline(&server, &format!("sub-{version}-{qos}")).await;
            subscriptions(&server, 0).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_qos1_and_qos2_published_while_offline() {
    let (server, addr) = start_broker("").await;
    let (mut sub, ack) = v4_client(addr, "keeper", false, |_| {}).await;
    assert!(!ack.session_present);
    sub.client
        .subscribe("q/#", RQoS::ExactlyOnce)
        .await
        .unwrap();
    sub.suback().await;
    sub.client.disconnect().await.unwrap();
    offline(&server, "keeper").await;

    let (publisher, _) = v4_client(addr, "pub", true, |_| {}).await;
    for i in 0..10 {
        let qos = if i % 2 == 0 {
            RQoS::AtLeastOnce
        } else {
            RQoS::ExactlyOnce
        };
        publisher
            .client
            .publish(format!("q/{i}"), qos, false, format!("m{i}"))
            .await
            .unwrap();
    }
    // Wait until all ten are queued for the offline session.
    let deadline = Instant::now() + WAIT;
    while vmq_broker::metrics::Metrics::get(&server.engine().metrics().queue_message_in) < 10 {
        assert!(Instant::now() < deadline, "messages not queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (mut sub, ack) = v4_client(addr, "keeper", false, |_| {}).await;
    assert!(ack.session_present, "the session was kept");
    for i in 0..10 {
        let p = sub.next_publish().await;
        assert_eq!(p.topic, format!("q/{i}"));
        assert_eq!(p.payload, Bytes::from(format!("m{i}")));
        let qos = if i % 2 == 0 {
            RQoS::AtLeastOnce
        } else {
            RQoS::ExactlyOnce
        };
        assert_eq!(p.qos, qos);
    }
    sub.no_publish_within(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos1_is_redelivered_with_dup_after_reconnect() {
    let (server, addr) = start_broker("").await;
    // A raw persistent v3.1.1 subscriber that never acknowledges.
    let mut sub = Raw::open(addr, Protocol::V311).await;
    let connect = |clean| {
        Packet::Connect(Box::new(Connect {
            protocol: Protocol::V311,
            clean_start: clean,
            keep_alive: 0,
            client_id: "forgetful".into(),
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
        }))
    };
    sub.send(connect(false)).await;
    assert!(matches!(sub.recv().await, Some(Packet::ConnAck(_))));
    sub.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "r/1".into(),
            SubOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (publisher, _) = v4_client(addr, "p2", true, |_| {}).await;
    publisher
        .client
        .publish("r/1", RQoS::AtLeastOnce, false, "once")
        .await
        .unwrap();
    let Some(Packet::Publish(first)) = sub.recv().await else {
        panic!("no publish")
    };
    assert!(!first.dup);
    drop(sub);
    offline(&server, "forgetful").await;

    let mut again = Raw::open(addr, Protocol::V311).await;
    again.send(connect(false)).await;
    let Some(Packet::ConnAck(ack)) = again.recv().await else {
        panic!("no connack")
    };
    assert!(ack.session_present);
    let Some(Packet::Publish(redelivered)) = again.recv().await else {
        panic!("no redelivery")
    };
    assert!(redelivered.dup, "redelivery carries DUP");
    assert_eq!(redelivered.packet_id, first.packet_id);
    assert_eq!(redelivered.payload, first.payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_set_delivered_and_cleared() {
    let (server, addr) = start_broker("").await;
    let (publisher, _) = v4_client(addr, "retainer", true, |_| {}).await;
    publisher
        .client
        .publish("status/door", RQoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while server.engine().retained_count() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut sub, _) = v4_client(addr, "late", true, |_| {}).await;
    sub.client
        .subscribe("status/+", RQoS::AtLeastOnce)
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("status/door", &b"open"[..], true)
    );

    // A live publish of a retained message reaches existing subscribers without the flag.
    publisher
        .client
        .publish("status/door", RQoS::AtLeastOnce, true, "closed")
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"closed"[..], false));

    publisher
        .client
        .publish("status/door", RQoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while server.engine().retained_count() != 0 {
        assert!(
            Instant::now() < deadline,
            "empty retained publish did not clear"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut fresh, _) = v4_client(addr, "fresh", true, |_| {}).await;
    fresh
        .client
        .subscribe("status/#", RQoS::AtLeastOnce)
        .await
        .unwrap();
    fresh.suback().await;
    fresh.no_publish_within(Duration::from_millis(300)).await;
}

fn with_will(
    id: &str,
    protocol: Protocol,
    will_delay: Option<u32>,
    session_expiry: Option<u32>,
) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 0,
        client_id: id.into(),
        username: None,
        password: None,
        will: Some(Will {
            topic: format!("wills/{id}"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::from(vmq_broker::mqtt::PropertyFields {
                will_delay_interval: will_delay,
                ..Default::default()
            }),
        }),
        properties: Properties::from(vmq_broker::mqtt::PropertyFields {
            session_expiry_interval: session_expiry,
            ..Default::default()
        }),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_are_sent_on_abnormal_loss_only() {
    let (server, addr) = start_broker("").await;
    let (mut watcher, _) = v4_client(addr, "watcher", true, |_| {}).await;
    watcher
        .client
        .subscribe("wills/#", RQoS::AtLeastOnce)
        .await
        .unwrap();
    watcher.suback().await;

    // Abnormal loss: the socket just goes away.
    let mut lost = Raw::open(addr, Protocol::V311).await;
    lost.send(with_will("crashy", Protocol::V311, None, None))
        .await;
    assert!(matches!(lost.recv().await, Some(Packet::ConnAck(_))));
    drop(lost);
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("wills/crashy", &b"gone"[..])
    );

    // A clean DISCONNECT: no will.
    let mut polite = Raw::open(addr, Protocol::V311).await;
    polite
        .send(with_will("polite", Protocol::V311, None, None))
        .await;
    assert!(matches!(polite.recv().await, Some(Packet::ConnAck(_))));
    polite.send(Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(polite.until_closed().await, None);
    watcher.no_publish_within(Duration::from_millis(300)).await;

    // v5 DISCONNECT with reason 0x04: the will is sent.
    let mut v5 = Raw::open(addr, Protocol::V5).await;
    v5.send(with_will("asks", Protocol::V5, None, None)).await;
    assert!(matches!(v5.recv().await, Some(Packet::ConnAck(_))));
    v5.send(Packet::Disconnect(Disconnect {
        reason: DisconnectReason::DisconnectWithWill,
        properties: Properties::default(),
    }))
    .await;
    assert_eq!(watcher.next_publish().await.topic, "wills/asks");

    // v5 will delay 1 s with session expiry 60 s: sent after the delay, not at once.
    let mut delayed = Raw::open(addr, Protocol::V5).await;
    delayed
        .send(with_will("later", Protocol::V5, Some(1), Some(60)))
        .await;
    assert!(matches!(delayed.recv().await, Some(Packet::ConnAck(_))));
    let lost_at = Instant::now();
    drop(delayed);
    assert_eq!(watcher.next_publish().await.topic, "wills/later");
    assert!(
        lost_at.elapsed() >= Duration::from_millis(900),
        "will delay honoured"
    );
    assert_eq!(
        vmq_broker::metrics::Metrics::get(&server.engine().metrics().wills_published),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takeover_closes_the_old_connection_with_0x8e() {
    let (_server, addr) = start_broker("").await;
    let (mut first, ack) = Raw::connect(addr, Protocol::V5, "twin", 0).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    let (_second, ack) = Raw::connect(addr, Protocol::V5, "twin", 0).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    match first.until_closed().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_closes_a_silent_client_after_one_and_a_half_intervals() {
    let (_server, addr) = start_broker("").await;
    let (mut silent, _) = Raw::connect(addr, Protocol::V5, "silent", 1).await;
    let start = Instant::now();
    match silent.until_closed().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_keepalive_is_announced_as_server_keep_alive_and_enforced() {
    let (_server, addr) = start_broker("max_keepalive = 1").await;
    // Asked for more than the cap, or for none: told the cap, and held to it.
    for asked in [100, 0] {
        let (mut c, ack) = Raw::connect(addr, Protocol::V5, "capped", asked).await;
        match ack {
            Packet::ConnAck(a) => assert_eq!(a.properties.server_keep_alive, Some(1)),
            other => panic!("{other:?}"),
        }
        let start = Instant::now();
        match c.until_closed().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::KeepAliveTimeout),
            other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // Within the cap: nothing announced. v3 clients cannot be told: nothing either.
    let (_c, ack) = Raw::connect(addr, Protocol::V5, "within", 1).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(a.properties.server_keep_alive, None),
        other => panic!("{other:?}"),
    }
    let (_v3, ack) = Raw::connect(addr, Protocol::V311, "old", 100).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(
            (a.code, a.properties.server_keep_alive),
            (ConnAckReason::Success, None)
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_delivers_one_copy_per_message() {
    let (server, addr) = start_broker("").await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (mut m, _) = v4_client(addr, &format!("worker{i}"), true, |_| {}).await;
        m.client
            .subscribe("$share/g/jobs/+", RQoS::AtLeastOnce)
            .await
            .unwrap();
        m.suback().await;
        members.push(m);
    }
    subscriptions(&server, 3).await;
    let (publisher, _) = v4_client(addr, "boss", true, |_| {}).await;
    let total = 60;
    for i in 0..total {
        publisher
            .client
            .publish(format!("jobs/{i}"), RQoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let mut seen = HashMap::new();
    let mut per_member = [0; 3];
    while seen.len() < total {
        for (k, m) in members.iter_mut().enumerate() {
            while let Ok(Some(rumqttc::Packet::Publish(p))) =
                timeout(Duration::from_millis(50), m.incoming.recv()).await
            {
                assert!(
                    seen.insert(p.topic.clone(), k).is_none(),
                    "{} delivered twice",
                    p.topic
                );
                per_member[k] += 1;
            }
        }
    }
    assert_eq!(per_member.iter().sum::<usize>(), total);
    assert!(
        per_member.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_member:?}"
    );
}

fn v5_publish(
    topic: &str,
    alias: Option<u16>,
    expiry: Option<u32>,
    payload: &'static [u8],
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: 0,
        payload: Bytes::from_static(payload),
        properties: Properties::from(vmq_broker::mqtt::PropertyFields {
            topic_alias: alias,
            message_expiry_interval: expiry,
            ..Default::default()
        }),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_topic_aliases_and_message_expiry() {
    let (server, addr) = start_broker("").await;
    let (mut sub, _) = v4_client(addr, "alias-watcher", true, |_| {}).await;
    sub.client
        .subscribe("sensors/#", RQoS::AtMostOnce)
        .await
        .unwrap();
    sub.suback().await;
    let (mut publisher, _) = Raw::connect(addr, Protocol::V5, "aliaser", 0).await;
    publisher
        .send(v5_publish("sensors/a", Some(1), None, b"first"))
        .await;
    publisher
        .send(v5_publish("", Some(1), None, b"second"))
        .await;
    for want in [&b"first"[..], b"second"] {
        let p = sub.next_publish().await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("sensors/a", want));
    }
    // An alias above the broker's topic_alias_max is refused with 0x94.
    publisher
        .send(v5_publish("sensors/b", Some(500), None, b"x"))
        .await;
    match publisher.until_closed().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::TopicAliasInvalid),
        other => panic!("{other:?}"),
    }

    // Message expiry: a persistent v5 session offline for 2 s gets only the message that did
    // not expire, with its expiry decremented by the time spent queued.
    let mut keeper = Raw::open(addr, Protocol::V5).await;
    let connect = Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start: false,
        keep_alive: 0,
        client_id: "expiring".into(),
        username: None,
        password: None,
        will: None,
        properties: Properties::from(vmq_broker::mqtt::PropertyFields {
            session_expiry_interval: Some(300),
            ..Default::default()
        }),
    }));
    keeper.send(connect.clone()).await;
    assert!(matches!(keeper.recv().await, Some(Packet::ConnAck(_))));
    keeper
        .send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                "exp/#".into(),
                SubOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(keeper.recv().await, Some(Packet::SubAck(_))));
    keeper.send(Packet::Disconnect(Disconnect::default())).await;
    keeper.until_closed().await;
    offline(&server, "expiring").await;
    let (mut p2, _) = Raw::connect(addr, Protocol::V5, "expirer", 0).await;
    p2.send(v5_publish("exp/short", None, Some(1), b"short"))
        .await;
    p2.send(v5_publish("exp/long", None, Some(60), b"long"))
        .await;
    // Expiry is about time passing: this wait is the subject of the test.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut back = Raw::open(addr, Protocol::V5).await;
    back.send(connect).await;
    let Some(Packet::ConnAck(ack)) = back.recv().await else {
        panic!("no connack")
    };
    assert!(ack.session_present);
    let Some(Packet::Publish(p)) = back.recv().await else {
        panic!("no publish")
    };
    assert_eq!(p.topic, "exp/long");
    let left = p
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!(
        (50..=58).contains(&left),
        "expiry decremented by time queued: {left}"
    );
    assert!(
        vmq_broker::metrics::Metrics::get(&server.engine().metrics().queue_message_expired) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_v5_subscriptions_give_one_publish_with_every_identifier() {
    let (_server, addr) = start_broker("").await;
    let (mut sub, _) = Raw::connect(addr, Protocol::V5, "overlap", 0).await;
    for (id, filter) in [(7u32, "o/+"), (9, "o/#")] {
        sub.send(Packet::Subscribe(Subscribe {
            packet_id: id as u16,
            filters: vec![(
                filter.into(),
                SubOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::from(vmq_broker::mqtt::PropertyFields {
                subscription_identifiers: vec![id],
                ..Default::default()
            }),
        }))
        .await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    }
    let (publisher, _) = v4_client(addr, "op", true, |_| {}).await;
    publisher
        .client
        .publish("o/x", RQoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let Some(Packet::Publish(p)) = sub.recv().await else {
        panic!("no publish")
    };
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    // Exactly one copy.
    sub.send(Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_publish_and_subscribe_at_once() {
    let (_server, addr) = start_broker("").await;
    let n = 200;
    let per_client = 10;
    let mut clients = Vec::new();
    for i in 0..n {
        let (mut c, _) = v4_client(addr, &format!("load{i}"), true, |_| {}).await;
        c.client
            .subscribe(format!("load/{i}"), RQoS::AtLeastOnce)
            .await
            .unwrap();
        c.suback().await;
        clients.push(c);
    }
    for (i, c) in clients.iter().enumerate() {
        let target = (i + 1) % n;
        for k in 0..per_client {
            c.client
                .publish(
                    format!("load/{target}"),
                    RQoS::AtLeastOnce,
                    false,
                    format!("{i}:{k}"),
                )
                .await
                .unwrap();
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let from = (i + n - 1) % n;
        for k in 0..per_client {
            let p = c.next_publish().await;
            assert_eq!(p.payload, Bytes::from(format!("{from}:{k}")), "client {i}");
        }
    }
}
