//! Bad input gets the spec's answer, closes only that connection, and never stops the broker
//! from serving everyone else.

use bytes::Bytes;
use rumqttc::QoS as RQoS;
use vmq_broker::mqtt::{
    ConnAckReason, Connect, DisconnectReason, Packet, Properties, Protocol, Publish, QoS,
    SubAckReason, SubOptions, Subscribe,
};
use vmq_tests::broker::{Raw, start_broker, v4_client};

/// A client that keeps working while others misbehave.
async fn still_served(addr: std::net::SocketAddr, tag: &str) {
    let (mut c, _) = v4_client(addr, &format!("healthy-{tag}"), true, |_| {}).await;
    c.client
        .subscribe(format!("health/{tag}"), RQoS::AtLeastOnce)
        .await
        .unwrap();
    c.suback().await;
    c.client
        .publish(format!("health/{tag}"), RQoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(&c.next_publish().await.payload[..], b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_close_the_connection() {
    let (_server, addr) = start_broker("").await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        let mut raw = Raw::open(addr, Protocol::V311).await;
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        raw.send_bytes(&bytes).await;
        // The peer hangs up after its garbage, as a broken client would.
        let _ = tokio::io::AsyncWriteExt::shutdown(raw.framed.get_mut()).await;
        raw.until_closed().await;
        if round % 5 == 0 {
            still_served(addr, &format!("random{round}")).await;
        }
    }
    still_served(addr, "random-end").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_name_and_level() {
    let (_server, addr) = start_broker("").await;
    // Protocol name "MQTX": not MQTT at all, closed without an answer.
    let mut raw = Raw::open(addr, Protocol::V311).await;
    raw.send_bytes(b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00")
        .await;
    assert_eq!(raw.until_closed().await, None);
    // "MQTT" level 9: CONNACK "unacceptable protocol version" (1), then closed.
    let mut raw = Raw::open(addr, Protocol::V311).await;
    raw.send_bytes(b"\x10\x0c\x00\x04MQTT\x09\x02\x00\x3c\x00\x00")
        .await;
    match raw.until_closed().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnAckReason::UnsupportedProtocolVersion),
        other => panic!("{other:?}"),
    }
    still_served(addr, "protocol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_over_the_size_limit_gets_0x95() {
    let (_server, addr) = start_broker("max_message_size = 1KB\n").await;
    let (mut raw, ack) = Raw::connect(addr, Protocol::V5, "big", 0).await;
    let Packet::ConnAck(ack) = ack else { panic!() };
    assert_eq!(
        ack.properties.maximum_packet_size,
        Some(1024),
        "v5 clients are told the limit"
    );
    raw.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "big".into(),
        packet_id: 0,
        payload: Bytes::from(vec![0u8; 2048]),
        properties: Properties::default(),
    }))
    .await;
    match raw.until_closed().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::PacketTooLarge),
        other => panic!("{other:?}"),
    }
    still_served(addr, "size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_a_protocol_error() {
    let (_server, addr) = start_broker("").await;
    let (mut raw, _) = Raw::connect(addr, Protocol::V5, "again", 0).await;
    raw.send(Packet::Connect(Box::new(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "again".into(),
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    })))
    .await;
    match raw.until_closed().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, DisconnectReason::ProtocolError),
        other => panic!("{other:?}"),
    }
    still_served(addr, "second").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_subscribe_filter_is_refused_in_the_suback() {
    let (_server, addr) = start_broker("").await;
    for (protocol, code) in [
        (Protocol::V5, SubAckReason::TopicFilterInvalid),
        // MQTT 3's only failure code, 0x80.
        (Protocol::V311, SubAckReason::UnspecifiedError),
    ] {
        let (mut raw, _) = Raw::connect(addr, protocol, "filters", 0).await;
        raw.send(Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![
                (
                    "ok/+".into(),
                    SubOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                ),
                ("bad/#/x".into(), SubOptions::default()),
            ],
            properties: Properties::default(),
        }))
        .await;
        match raw.recv().await {
            Some(Packet::SubAck(s)) => assert_eq!(s.reasons, vec![SubAckReason::GrantedQos1, code]),
            other => panic!("{other:?}"),
        }
        // The connection stays usable.
        raw.send(Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(Packet::PingResp));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_ids() {
    let (_server, addr) = start_broker("").await;
    let connect = |protocol, clean_start| {
        Packet::Connect(Box::new(Connect {
            protocol,
            clean_start,
            keep_alive: 0,
            client_id: String::new(),
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
        }))
    };
    // 3.1.1 with clean_session=false: identifier rejected.
    let mut raw = Raw::open(addr, Protocol::V311).await;
    raw.send(connect(Protocol::V311, false)).await;
    match raw.until_closed().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnAckReason::ClientIdentifierNotValid),
        other => panic!("{other:?}"),
    }
    // v5: the server assigns one and says which.
    let mut raw = Raw::open(addr, Protocol::V5).await;
    raw.send(connect(Protocol::V5, true)).await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.code, ConnAckReason::Success);
            assert!(
                a.properties
                    .assigned_client_identifier
                    .as_ref()
                    .is_some_and(|id| !id.is_empty())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_when_not_allowed() {
    let text = "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = off\nmessage_store = off\n";
    let server = vmq_broker::Server::start(vmq_broker::Config::parse(text, "t").unwrap())
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let (mut raw, ack) = Raw::connect(addr, Protocol::V311, "anon", 0).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(a.code, ConnAckReason::NotAuthorized),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.until_closed().await, None);
}
