//! The events sidecar relay end to end: a real broker, real MQTT clients, and a real sidecar
//! built on the SDK, over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use rumqttc::QoS as RQoS;
use tokio::time::{Instant, timeout};
use vmq_broker::hooks::{
    AuthResult, ClientInfo, Hook, MatchedAcl, MessageInfo, Plugin, PublishModifiers,
    RegisterModifiers, RegisterRequest, SubscribeTopic, TopicVerdict,
};
use vmq_broker::mqtt::{Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS};
use vmq_sidecar_sdk::proto::v1 as pb;
use vmq_sidecar_sdk::{Event, EventStream};
use vmq_tests::WAIT;
use vmq_tests::broker::{Raw, relay_broker as broker, v4_client};

const ALL_HOOKS: &str = "[on_register, on_register_failed, on_publish, on_subscribe, on_unsubscribe, \
    on_deliver, on_delivery_complete, on_offline_message, on_message_drop, on_client_wakeup, \
    on_client_offline, on_client_gone, on_session_expired]";

/// An auth plugin for the tests: refuses user "intruder", and reports an ACL on every publish
/// and subscribe it allows, so `matched_acl` can be checked.
struct TestAuth;

fn test_acl() -> Option<MatchedAcl> {
    Some(MatchedAcl {
        name: "acl-test".into(),
        pattern: "#".into(),
    })
}

impl Plugin for TestAuth {
    fn name(&self) -> &str {
        "test_auth"
    }
    fn wants(&self, hook: Hook) -> bool {
        matches!(
            hook,
            Hook::AuthOnRegister | Hook::AuthOnPublish | Hook::AuthOnSubscribe
        )
    }
    fn auth_on_register<'a>(
        &'a self,
        req: &'a RegisterRequest<'a>,
    ) -> BoxFuture<'a, AuthResult<RegisterModifiers>> {
        let refuse = req.client.username.as_deref() == Some("intruder");
        Box::pin(async move {
            if refuse {
                AuthResult::refused_because(vmq_broker::hooks::INVALID_CREDENTIALS)
            } else {
                AuthResult::Ok(None)
            }
        })
    }
    fn auth_on_publish<'a>(
        &'a self,
        _c: &'a ClientInfo,
        _m: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        Box::pin(async { AuthResult::Ok(test_acl()) })
    }
    fn auth_on_subscribe<'a>(
        &'a self,
        _c: &'a ClientInfo,
        _t: &'a [SubscribeTopic],
        _p: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<TopicVerdict>>> {
        Box::pin(async { AuthResult::Ok(test_acl()) })
    }
}

/// A sidecar (SDK server, Stream API) on an ephemeral port.
async fn sidecar() -> (EventStream, u16) {
    let server = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    (server.into_stream(1024), port)
}

/// Collects events until `pred` is satisfied.
async fn collect_until(
    events: &mut EventStream,
    got: &mut Vec<Event>,
    pred: impl Fn(&[Event]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !pred(got) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(e)) => got.push(e),
            _ => panic!(
                "events so far: {:#?}",
                got.iter().map(Event::hook).collect::<Vec<_>>()
            ),
        }
    }
}

fn has(hook: &'static str) -> impl Fn(&[Event]) -> bool {
    move |evs| evs.iter().any(|e| e.hook() == hook)
}

fn ts_ok(t: Option<&vmq_sidecar_sdk::proto::Timestamp>, before: std::time::SystemTime) {
    let t = t.expect("timestamp set");
    let at = std::time::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32);
    assert!(
        at >= before && at <= std::time::SystemTime::now() + Duration::from_secs(1),
        "timestamp at hook time"
    );
}

fn v5_connect(id: &str, expiry: Option<u32>, user_properties: Vec<(String, String)>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: id.into(),
        username: Some("bob".into()),
        password: None,
        will: None,
        properties: Properties::from(vmq_broker::mqtt::PropertyFields {
            session_expiry_interval: expiry,
            user_properties,
            ..Default::default()
        }),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_with_every_field() {
    let started = std::time::SystemTime::now();
    let (mut events, port) = sidecar().await;
    let (server, addr, relay) = broker(
        port,
        // Anonymous access off: VerneMQ asks auth_on_register only then.
        &format!("vmq_events_sidecar.hooks = {ALL_HOOKS}\nallow_anonymous = off\n"),
        vec![Arc::new(TestAuth)],
    )
    .await;
    let mut got = Vec::new();

    // A persistent v3 subscriber with a user name.
    let (mut sub, _) = v4_client(addr, "sub-1", false, |o| {
        o.set_credentials("alice", "secret");
    })
    .await;
    sub.client
        .subscribe("ev/#", RQoS::AtLeastOnce)
        .await
        .unwrap();
    sub.suback().await;
    sub.client.unsubscribe("other/#").await.unwrap();
    collect_until(&mut events, &mut got, has("on_unsubscribe")).await;

    // A v5 publisher with user properties.
    let mut publisher = Raw::open(addr, Protocol::V5).await;
    publisher
        .send(v5_connect("pub-1", None, vec![("k".into(), "v".into())]))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::ConnAck(_))));
    let publish = |topic: &str, id: u16, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: id,
            payload: Bytes::from_static(payload),
            properties: Properties::default(),
        })
    };
    publisher.send(publish("ev/a", 1, b"\x00p1\xff")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let p = sub.next_publish().await; // rumqttc acknowledges: on_delivery_complete
    assert_eq!(&p.payload[..], b"\x00p1\xff");
    publisher.send(publish("nobody/here", 2, b"lost")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    collect_until(&mut events, &mut got, |e| {
        has("on_delivery_complete")(e) && has("on_message_drop")(e)
    })
    .await;

    // The subscriber goes away (persistent: offline), a message is queued for it.
    sub.client.disconnect().await.unwrap();
    collect_until(&mut events, &mut got, has("on_client_offline")).await;
    publisher.send(publish("ev/b", 3, b"queued")).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    collect_until(&mut events, &mut got, has("on_offline_message")).await;

    // A refused client, then the publisher leaves (clean: gone).
    let (_intruder, ack) = v4_client_refused(addr).await;
    assert_eq!(ack, 4);
    publisher
        .send(Packet::Disconnect(Disconnect::default()))
        .await;
    publisher.until_closed().await;
    collect_until(&mut events, &mut got, |e| {
        has("on_register_failed")(e) && has("on_client_gone")(e)
    })
    .await;

    // A v5 session with a 1 s expiry, closed by the broker's keep-alive... no: dropped socket.
    let mut short = Raw::open(addr, Protocol::V5).await;
    short.send(v5_connect("short", Some(1), vec![])).await;
    assert!(matches!(short.recv().await, Some(Packet::ConnAck(_))));
    drop(short);
    collect_until(&mut events, &mut got, has("on_session_expired")).await;

    let mut seen: Vec<&str> = got.iter().map(Event::hook).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 13, "all 13 event types: {seen:?}");

    let find = |hook: &str, client: &str| -> Event {
        got.iter()
            .find(|e| e.hook() == hook && e.client_id() == Some(client))
            .cloned()
            .unwrap_or_else(|| panic!("no {hook} for {client}"))
    };
    let sub_session = find("on_register", "sub-1")
        .session_id()
        .unwrap()
        .to_owned();
    let pub_session = find("on_register", "pub-1")
        .session_id()
        .unwrap()
        .to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&sub_session)
            .unwrap()
            .get_version_num(),
        4
    );
    assert_ne!(sub_session, pub_session);
    for e in &got {
        ts_ok(e.timestamp(), started);
        assert_eq!(e.mountpoint(), Some(""));
    }
    let acl = Some(pb::MatchedAcl {
        name: "acl-test".into(),
        pattern: "#".into(),
    });

    let Event::OnRegister(r) = find("on_register", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (r.username.as_str(), r.peer_addr.as_str()),
        ("alice", "127.0.0.1")
    );
    assert!(r.peer_port > 0);
    let Event::OnRegister(r) = find("on_register", "pub-1") else {
        unreachable!()
    };
    assert_eq!(r.user_properties.get("k").map(String::as_str), Some("v"));
    assert_eq!(r.username, "bob");
    let Event::OnClientWakeUp(w) = find("on_client_wakeup", "sub-1") else {
        unreachable!()
    };
    assert_eq!(w.session_id, sub_session);
    let Event::OnSubscribe(s) = find("on_subscribe", "sub-1") else {
        unreachable!()
    };
    assert_eq!(s.username, "alice");
    assert_eq!(
        s.topics,
        vec![pb::TopicInfo {
            topic: "ev/#".into(),
            qos: 1,
            matched_acl: acl.clone()
        }]
    );
    assert_eq!(s.session_id, sub_session);
    let Event::OnUnsubscribe(u) = find("on_unsubscribe", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (u.topics.clone(), u.username.as_str()),
        (vec!["other/#".to_owned()], "alice")
    );
    let Event::OnPublish(p) = find("on_publish", "pub-1") else {
        unreachable!()
    };
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        ("ev/a", &b"\x00p1\xff"[..], 1, false)
    );
    assert_eq!(
        (
            p.username.as_str(),
            p.matched_acl.clone(),
            p.session_id.as_str()
        ),
        ("bob", acl.clone(), pub_session.as_str())
    );
    let Event::OnDeliver(d) = find("on_deliver", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (
            d.topic.as_str(),
            &d.payload[..],
            d.qos,
            d.is_retain,
            d.persisted
        ),
        ("ev/a", &b"\x00p1\xff"[..], 1, false, false)
    );
    assert_eq!(
        (
            d.username.as_str(),
            d.matched_acl.clone(),
            d.session_id.as_str()
        ),
        ("alice", acl.clone(), sub_session.as_str())
    );
    let Event::OnDeliveryComplete(c) = find("on_delivery_complete", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (
            c.topic.as_str(),
            c.qos,
            c.username.as_str(),
            c.session_id.as_str()
        ),
        ("ev/a", 1, "alice", sub_session.as_str())
    );
    assert_eq!(c.matched_acl, acl);
    let Event::OnMessageDrop(m) = find("on_message_drop", "pub-1") else {
        unreachable!()
    };
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.reason.as_str(), m.qos),
        ("nobody/here", &b"lost"[..], "no_matching_subscribers", 1)
    );
    assert_eq!(
        (m.matched_acl.clone(), m.session_id.as_str()),
        (acl.clone(), pub_session.as_str())
    );
    let Event::OnClientOffline(o) = find("on_client_offline", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (o.reason, o.username.as_str(), o.session_id.as_str()),
        (
            pb::Reason::NormalDisconnect as i32,
            "alice",
            sub_session.as_str()
        )
    );
    let Event::OnOfflineMessage(q) = find("on_offline_message", "sub-1") else {
        unreachable!()
    };
    assert_eq!(
        (
            q.topic.as_str(),
            &q.payload[..],
            q.qos,
            q.retain,
            q.session_id.as_str()
        ),
        ("ev/b", &b"queued"[..], 1, false, sub_session.as_str())
    );
    let Event::OnRegisterFailed(f) = find("on_register_failed", "intruder") else {
        unreachable!()
    };
    assert_eq!(
        (f.username.as_str(), f.peer_addr.as_str(), f.clean_session),
        ("intruder", "127.0.0.1", true)
    );
    assert_eq!(
        f.reason,
        pb::RegistrationFailureReason::InvalidCredentials as i32
    );
    assert!(f.peer_port > 0);
    let Event::OnClientGone(g) = find("on_client_gone", "pub-1") else {
        unreachable!()
    };
    assert_eq!(
        (g.reason, g.username.as_str(), g.session_id.as_str()),
        (
            pb::Reason::NormalDisconnect as i32,
            "bob",
            pub_session.as_str()
        )
    );
    let Event::OnClientOffline(o) = find("on_client_offline", "short") else {
        unreachable!()
    };
    assert_eq!(o.reason, pb::Reason::TcpClosed as i32);
    let Event::OnSessionExpired(x) = find("on_session_expired", "short") else {
        unreachable!()
    };
    assert_eq!(
        x.session_id,
        find("on_register", "short").session_id().unwrap()
    );

    assert_eq!(relay.metrics().total_dropped(), 0);
    drop(server);
}

/// Connects user "intruder" and returns its CONNACK code.
async fn v4_client_refused(addr: SocketAddr) -> (Raw, u8) {
    let mut raw = Raw::open(addr, Protocol::V311).await;
    raw.send(Packet::Connect(Box::new(Connect {
        protocol: Protocol::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: "intruder".into(),
        username: Some("intruder".into()),
        password: Some(Bytes::from_static(b"guess")),
        will: None,
        properties: Properties::default(),
    })))
    .await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) => (raw, a.code.v3_code()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_order_with_many_clients_and_nothing_missing() {
    let (mut events, port) = sidecar().await;
    let (_server, addr, relay) = broker(
        port,
        "vmq_events_sidecar.hooks = on_publish,on_deliver\n",
        vec![],
    )
    .await;
    let clients = 100;
    let per_client = 500;
    let mut handles = Vec::new();
    for i in 0..clients {
        let (mut c, _) = v4_client(addr, &format!("o{i}"), true, |o| {
            o.set_inflight(100);
        })
        .await;
        c.client
            .subscribe(format!("order/{i}"), RQoS::AtMostOnce)
            .await
            .unwrap();
        c.suback().await;
        handles.push(tokio::spawn(async move {
            for k in 0..per_client {
                c.client
                    .publish(format!("order/{i}"), RQoS::AtMostOnce, false, k.to_string())
                    .await
                    .unwrap();
            }
            for _ in 0..per_client {
                c.next_publish().await;
            }
            c
        }));
    }
    let mut keep = Vec::new();
    for h in handles {
        keep.push(h.await.unwrap());
    }
    let mut next: HashMap<(String, &'static str), u64> = HashMap::new();
    let total = clients * per_client * 2;
    for _ in 0..total {
        let e = timeout(WAIT, events.next())
            .await
            .expect("all events arrive")
            .unwrap();
        let (topic, payload) = e.message().expect("publish or deliver");
        let k: u64 = std::str::from_utf8(payload).unwrap().parse().unwrap();
        let slot = next.entry((topic.to_owned(), e.hook())).or_insert(0);
        assert_eq!(k, *slot, "{} of {topic} out of order", e.hook());
        *slot += 1;
    }
    assert_eq!(next.len(), clients * 2);
    assert!(next.values().all(|n| *n == per_client as u64));
    assert_eq!(relay.metrics().total_dropped(), 0);
    assert_eq!(relay.metrics().total_sent(), total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_restart_loses_nothing() {
    let first = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let port = first.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tx1 = tx.clone();
    let first_run = tokio::spawn(first.serve_with_shutdown(
        move |e: Event| {
            let tx = tx1.clone();
            async move {
                let _ = tx.send(e);
            }
        },
        async {
            let _ = stopped.await;
        },
    ));
    let (_server, addr, relay) = broker(
        port,
        "vmq_events_sidecar.hooks = on_publish\nvmq_events_sidecar.pool_size = 4\n",
        vec![],
    )
    .await;
    let (publisher, _) = v4_client(addr, "steady", true, |_| {}).await;
    let total = 2000u64;
    let pump = tokio::spawn(async move {
        for k in 0..total {
            publisher
                .client
                .publish("restart/x", RQoS::AtMostOnce, false, k.to_string())
                .await
                .unwrap();
            if k % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        publisher
    });
    // Mid-stream: stop the sidecar, bring a new one up on the same port within a second.
    let mut got = Vec::new();
    while got.len() < 500 {
        got.push(timeout(WAIT, rx.recv()).await.unwrap().unwrap());
    }
    stop.send(()).unwrap();
    timeout(WAIT, first_run).await.unwrap().unwrap();
    let second = vmq_sidecar_sdk::Server::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(second.serve(move |e: Event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e);
        }
    }));
    let _publisher = pump.await.unwrap();
    while (got.len() as u64) < total {
        got.push(
            timeout(WAIT, rx.recv())
                .await
                .expect("every event arrives")
                .unwrap(),
        );
    }
    for (k, e) in got.iter().enumerate() {
        let (_, payload) = e.message().unwrap();
        assert_eq!(
            std::str::from_utf8(payload).unwrap(),
            k.to_string(),
            "in order, none missing"
        );
    }
    assert_eq!(relay.metrics().total_dropped(), 0);
    assert_eq!(relay.metrics().total_sent(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_enabled_and_disabled_at_run_time() {
    let (mut events, port) = sidecar().await;
    let (_server, addr, relay) =
        broker(port, "vmq_events_sidecar.hooks = on_publish\n", vec![]).await;
    let (mut c, _) = v4_client(addr, "toggler", true, |_| {}).await;
    c.client.subscribe("t/#", RQoS::AtMostOnce).await.unwrap();
    c.suback().await;
    c.client
        .publish("t/1", RQoS::AtMostOnce, false, "one")
        .await
        .unwrap();
    c.next_publish().await;
    let e = timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert_eq!(e.hook(), "on_publish");

    relay.disable("on_publish").unwrap();
    relay.enable("on_deliver").unwrap();
    assert_eq!(relay.enabled_hooks(), vec![Hook::OnDeliver]);
    c.client
        .publish("t/2", RQoS::AtMostOnce, false, "two")
        .await
        .unwrap();
    c.next_publish().await;
    let e = timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert_eq!(
        e.hook(),
        "on_deliver",
        "the very next event follows the new setting"
    );
    assert_eq!(e.message().unwrap().1, &Bytes::from_static(b"two"));
    assert!(relay.enable("on_lunch").is_err());
    assert_eq!(relay.metrics().sent_count(Hook::OnPublish), 1);
}
