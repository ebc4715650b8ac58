//! MQTT over TLS (mqtts), WebSocket and WebSocket over TLS against the `vmq-broker` binary, with
//! a test CA made by rcgen: mosquitto_pub/mosquitto_sub with and without a client certificate,
//! and a browser-style WebSocket client (tokio-tungstenite) speaking MQTT in binary messages.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use support::{WAIT, issue, make_pki, start_broker, terminate, wait_with_timeout};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vmq_broker::mqtt::{
    ConnAckReason, Connect, MqttCodec, Packet, Properties, Protocol, Publish, QoS, SubOptions,
    Subscribe,
};
use vmq_sidecar_sdk::Event as SidecarEvent;

/// The common name of the certificate a TLS listener presents now.
async fn served_name(dir: &Path, port: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let tls = client_tls(dir)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    vmq_broker::listener::tls::common_name(&cert).unwrap()
}

fn mosquitto(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool).args(args).output().unwrap()
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    vmq_broker::mqtt::encode_packet(p, Protocol::V311, &mut b);
    b.to_vec()
}

fn decode(bytes: &[u8]) -> Packet {
    use tokio_util::codec::Decoder;
    let mut b = BytesMut::from(bytes);
    MqttCodec::for_client(Protocol::V311, 1 << 20)
        .decode(&mut b)
        .unwrap()
        .expect("a whole packet per message")
}

/// MQTT over an established WebSocket: CONNECT, SUBSCRIBE, then wait for one PUBLISH.
async fn ws_session<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, topic: &str) -> Publish
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let connect = Packet::Connect(Box::new(Connect {
        protocol: Protocol::V311,
        clean_start: true,
        keep_alive: 30,
        client_id: format!("ws-{topic}"),
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    }));
    ws.send(Message::Binary(encode(&connect).into()))
        .await
        .unwrap();
    assert!(
        matches!(next_packet(&mut ws).await, Packet::ConnAck(a) if a.code == ConnAckReason::Success)
    );
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            topic.to_owned(),
            SubOptions {
                qos: QoS::AtMostOnce,
                ..SubOptions::default()
            },
        )],
        properties: Properties::default(),
    });
    ws.send(Message::Binary(encode(&sub).into())).await.unwrap();
    assert!(matches!(next_packet(&mut ws).await, Packet::SubAck(_)));
    // Now someone publishes over plain TCP.
    ws_publish_elsewhere(topic);
    match next_packet(&mut ws).await {
        Packet::Publish(p) => p,
        other => panic!("{other:?}"),
    }
}

/// The next MQTT packet from a WebSocket (one per binary message).
async fn next_packet<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Packet
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match timeout(WAIT, ws.next()).await.expect("in time") {
            Some(Ok(Message::Binary(b))) => return decode(&b),
            Some(Ok(_)) => {}
            other => panic!("websocket closed: {other:?}"),
        }
    }
}

static TCP_PORT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn ws_publish_elsewhere(topic: &str) {
    let port = TCP_PORT.get().unwrap();
    let out = mosquitto(
        "mosquitto_pub",
        &["-p", port, "-t", topic, "-m", "over tcp"],
    );
    assert!(out.status.success());
}

fn request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    req
}

fn client_tls(dir: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_client_certificates_websocket_and_secure_websocket() {
    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let mut events = sidecar.into_stream(256);
    let sidecar_port = events.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let authority = make_pki(d);
    let conf = d.join("vernemq.conf");
    let pem = |n: &str| d.join(n).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
             listener.ssl.default = 127.0.0.1:0\nlistener.ssl.default.certfile = {srv}\n\
             listener.ssl.default.keyfile = {key}\nlistener.ssl.default.cafile = {ca}\n\
             listener.ssl.default.require_certificate = on\n\
             listener.ssl.default.use_identity_as_username = on\n\
             listener.ws.default = 127.0.0.1:0\n\
             listener.wss.default = 127.0.0.1:0\nlistener.wss.default.certfile = {srv}\n\
             listener.wss.default.keyfile = {key}\n\
             allow_anonymous = on\nmessage_store = off\npersistent_data_dir = {data}\n\
             plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {sidecar_port}\n\
             vmq_events_sidecar.hooks = on_register\n",
            srv = pem("server.pem"),
            key = pem("server.key"),
            ca = pem("ca.pem"),
            data = pem("data"),
        ),
    )
    .unwrap();
    let (broker, tcp) = start_broker(&conf);
    // Listeners sort by transport, then name: tcp, ssl, ws, wss.
    let ports = broker.mqtt_ports().to_vec();
    assert_eq!(ports.len(), 4, "{ports:?}");
    let (ssl, ws, wss) = (ports[1].clone(), ports[2].clone(), ports[3].clone());
    TCP_PORT.set(tcp.clone()).unwrap();

    // mqtts with the test CA's client certificate: connects, publishes; the certificate's name
    // is the username (OnRegister says so).
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client.key"));
    let sub = std::thread::spawn({
        let (ssl, ca, cert, key) = (ssl.clone(), ca.clone(), cert.clone(), key.clone());
        move || {
            mosquitto(
                "mosquitto_sub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &ssl,
                    "--cafile",
                    &ca,
                    "--cert",
                    &cert,
                    "--key",
                    &key,
                    "-i",
                    "tls-sub",
                    "-t",
                    "secure/#",
                    "-C",
                    "1",
                    "-W",
                    "20",
                ],
            )
        }
    });
    match timeout(WAIT, events.next()).await.unwrap().unwrap() {
        SidecarEvent::OnRegister(r) => {
            assert_eq!(
                (r.client_id.as_str(), r.username.as_str()),
                ("tls-sub", "device-42")
            )
        }
        other => panic!("{other:?}"),
    }
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &ssl,
            "--cafile",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-t",
            "secure/1",
            "-m",
            "over tls",
            "-q",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sub.join().unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "over tls");

    // Without a client certificate: refused at the handshake.
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &ssl,
            "--cafile",
            &ca,
            "-t",
            "secure/2",
            "-m",
            "x",
        ],
    );
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );

    // WebSocket on /mqtt with subprotocol mqtt.
    let (stream, resp) =
        tokio_tungstenite::connect_async(request(&format!("ws://127.0.0.1:{ws}/mqtt")))
            .await
            .unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    let p = ws_session(stream, "browser/1").await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("browser/1", &b"over tcp"[..])
    );
    // Wrong path or no mqtt subprotocol: refused.
    assert!(
        tokio_tungstenite::connect_async(request(&format!("ws://127.0.0.1:{ws}/other")))
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{ws}/mqtt"))
            .await
            .is_err()
    );

    // WebSocket over TLS.
    let tcp_stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{wss}"))
        .await
        .unwrap();
    let tls = client_tls(d)
        .connect("localhost".try_into().unwrap(), tcp_stream)
        .await
        .unwrap();
    let (stream, _) =
        tokio_tungstenite::client_async(request(&format!("wss://localhost:{wss}/mqtt")), tls)
            .await
            .unwrap();
    let p = ws_session(stream, "browser/2").await;
    assert_eq!(&p.payload[..], b"over tcp");

    // Certificates are read again by `vmq-admin listener restart` and by SIGHUP.
    assert_eq!(served_name(d, &wss).await, "localhost");
    issue(&authority, d, "server", "renewed-by-restart");
    let http = broker.http_port().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_vmq-admin"))
        .arg("--config")
        .arg(&conf)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{http}"))
        .args(["listener", "restart", "name=default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The listener binds again: wait until it accepts, then look at its certificate.
    let renewed = timeout(WAIT, async {
        loop {
            if tokio::net::TcpStream::connect(format!("127.0.0.1:{wss}"))
                .await
                .is_ok()
            {
                return served_name(d, &wss).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(renewed, "renewed-by-restart");
    issue(&authority, d, "server", "renewed-by-sighup");
    support::signal(&broker, "-HUP");
    timeout(WAIT, async {
        while served_name(d, &wss).await != "renewed-by-sighup" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("SIGHUP reloads the certificates");
    let handshake_errors = support::metric(&http, "listener_handshake_errors").await;
    assert!(
        handshake_errors >= 3,
        "the refused handshakes are counted: {handshake_errors}"
    );
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[test]
fn unreadable_certificates_stop_the_broker_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(
        &conf,
        "listener.tcp.default = 127.0.0.1:0\nmessage_store = off\n\
         listener.ssl.default = 127.0.0.1:0\nlistener.ssl.default.certfile = /nonexistent/cert.pem\n\
         listener.ssl.default.keyfile = /nonexistent/key.pem\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmq-broker"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener.ssl.default.certfile /nonexistent/cert.pem"),
        "{err}"
    );
}

/// `max_ws_frame_size`: a WebSocket frame larger than it closes the client's connection;
/// smaller ones carry MQTT as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_over_max_ws_frame_size_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ws.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.ws.default = 127.0.0.1:0\nallow_anonymous = on\nmax_ws_frame_size = 512\n\
             message_store = off\npersistent_data_dir = {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (broker, ws_port) = start_broker(&conf);
    let url = format!("ws://127.0.0.1:{ws_port}/mqtt");
    let (mut ws, _) = tokio_tungstenite::connect_async(request(&url))
        .await
        .unwrap();
    let connect = Packet::Connect(Box::new(Connect {
        protocol: Protocol::V311,
        clean_start: true,
        keep_alive: 30,
        client_id: "framed".into(),
        username: None,
        password: None,
        will: None,
        properties: Properties::default(),
    }));
    ws.send(Message::Binary(encode(&connect).into()))
        .await
        .unwrap();
    assert!(matches!(next_packet(&mut ws).await, Packet::ConnAck(_)));
    let publish = |payload: usize| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "frames".into(),
            packet_id: 1,
            payload: vec![b'x'; payload].into(),
            properties: Properties::default(),
        })
    };
    // Under the limit: acknowledged.
    ws.send(Message::Binary(encode(&publish(300)).into()))
        .await
        .unwrap();
    assert!(matches!(next_packet(&mut ws).await, Packet::PubAck(_)));
    // Over it: the broker closes the connection.
    let _ = ws
        .send(Message::Binary(encode(&publish(1000)).into()))
        .await;
    let end = timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => panic!("an answer to an oversized frame"),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "connection closed");
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}
