//! Limits as an operator sets them, against the `vmq-broker` binary: connections per listener
//! and per node, connect rate, subscriptions per client, the connect timeout that closes
//! slow-loris clients; each refusal answered with its reason code and counted in `/metrics`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use support::{WAIT, start_broker, terminate, wait_with_timeout};
use tokio::time::timeout;

fn config(dir: &Path, extra: &str) -> PathBuf {
    let conf = dir.join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
             allow_anonymous = on\nmessage_store = off\n{extra}"
        ),
    )
    .unwrap();
    conf
}

fn client(id: &str, port: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port.parse().unwrap());
    o.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(o, 10)
}

/// Connects; `Ok` once accepted, `Err(code)` when refused.
async fn connect(l: &mut EventLoop) -> Result<(), ConnectReturnCode> {
    loop {
        match timeout(WAIT, l.poll()).await.expect("an answer") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

use support::metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_subscription_limits_answer_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(
        dir.path(),
        "listener.tcp.small = 127.0.0.1:0\nlistener.tcp.small.max_connections = 2\n\
         max_subscriptions_per_client = 2\n",
    );
    let (broker, _) = start_broker(&conf);
    let http = broker.http_port().to_owned();
    let ports = broker.mqtt_ports().to_vec();
    assert_eq!(ports.len(), 2);
    let small = ports[1].clone();

    // Two fit on the small listener; the third is told the quota is exceeded (v5 0x97).
    let mut kept = Vec::new();
    for id in ["s1", "s2"] {
        let (c, mut l) = client(id, &small);
        connect(&mut l).await.unwrap();
        kept.push((c, l));
    }
    let (_c, mut l) = client("s3", &small);
    assert_eq!(connect(&mut l).await, Err(ConnectReturnCode::QuotaExceeded));
    assert_eq!(metric(&http, "connections_refused_listener_limit").await, 1);
    // A v3 client is told the server is unavailable (0x03).
    let mut o = rumqttc::MqttOptions::new("s4", "127.0.0.1", small.parse().unwrap());
    o.set_keep_alive(Duration::from_secs(30));
    let (_c4, mut l4) = rumqttc::AsyncClient::new(o, 10);
    match timeout(WAIT, l4.poll()).await.unwrap() {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable)
        }
        other => panic!("{other:?}"),
    }
    // The other listener is not affected; a place freed is taken again.
    let (_d, mut dl) = client("other", &ports[0]);
    connect(&mut dl).await.unwrap();
    let (c1, mut l1) = kept.remove(0);
    c1.disconnect().await.unwrap();
    let _ = timeout(WAIT, async { while l1.poll().await.is_ok() {} }).await;
    let freed = timeout(WAIT, async {
        loop {
            let (_c, mut l) = client("s5", &small);
            if connect(&mut l).await.is_ok() {
                return (_c, l);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the freed place is available");

    // Subscriptions: two filters, the third refused with 0x97; an existing one may be renewed.
    let (c, mut l) = freed;
    for f in ["a/1", "a/2", "a/3", "a/1"] {
        c.subscribe(f, rumqttc::v5::mqttbytes::QoS::AtMostOnce)
            .await
            .unwrap();
    }
    let mut codes = Vec::new();
    timeout(WAIT, async {
        while codes.len() < 4 {
            if let Ok(Event::Incoming(Packet::SubAck(s))) = l.poll().await {
                codes.extend(s.return_codes);
            }
        }
    })
    .await
    .unwrap();
    let ok = SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtMostOnce);
    assert_eq!(codes, [ok, ok, SubscribeReasonCode::QuotaExceeded, ok]);
    assert_eq!(metric(&http, "subscriptions_refused_limit").await, 1);
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_rate_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "max_connect_rate = 3\n");
    let (broker, port) = start_broker(&conf);
    let http = broker.http_port().to_owned();
    // Ten connections within a second or two: at most 3 per second get in.
    let mut refused = 0;
    let mut kept = Vec::new();
    for i in 0..10 {
        let (c, mut l) = client(&format!("r{i}"), &port);
        match connect(&mut l).await {
            Ok(()) => kept.push((c, l)),
            Err(code) => {
                assert_eq!(code, ConnectReturnCode::ConnectionRateExceeded);
                refused += 1;
            }
        }
    }
    assert!(refused >= 4, "only {refused} refused");
    assert_eq!(
        metric(&http, "connections_refused_rate_limit").await,
        refused
    );
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_open_connections_do_not_keep_a_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "connect_timeout = 2s\nmax_connections = 5000\n");
    let (broker, port) = start_broker(&conf);
    let http = broker.http_port().to_owned();
    let addr = format!("127.0.0.1:{port}");
    // Slow loris: half of them send nothing, half the first bytes of a CONNECT.
    let mut lorises = Vec::new();
    for i in 0..1000 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        if i % 2 == 0 {
            s.write_all(&[0x10, 0x20, 0x00, 0x04, b'M']).unwrap();
        }
        lorises.push(s);
    }
    // Meanwhile a normal client connects, subscribes and gets its message at once.
    let started = std::time::Instant::now();
    let (c, mut l) = client("normal", &port);
    connect(&mut l).await.unwrap();
    c.subscribe("n/1", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    c.publish("n/1", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = l.poll().await {
                assert_eq!(&p.payload[..], b"hi");
                return;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served before the lorises timed out"
    );
    // Then every loris is closed by the connect timeout, and counted.
    timeout(WAIT, async {
        while metric(&http, "connections_connect_timeout").await < 1000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("all half-open connections timed out");
    drop(lorises);
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}
