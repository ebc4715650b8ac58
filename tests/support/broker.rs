//! Helpers for end-to-end tests of the broker: an in-process broker on an ephemeral loopback
//! port, rumqttc clients whose events arrive on a channel, and a raw MQTT client for sending
//! what well-behaved clients never send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use vmq_broker::hooks::Plugin;
use vmq_broker::mqtt::{
    ConnAckReason, Connect, MqttCodec, Packet, Properties, Protocol, Publish, QoS, SubOptions,
    Subscribe,
};
use vmq_broker::plugins::events_sidecar::EventsSidecar;
use vmq_broker::{Config, Server};

use crate::WAIT;

/// Starts a broker whose config is the default file's essentials plus `extra` lines.
pub async fn start_broker(extra: &str) -> (Server, SocketAddr) {
    let text = format!(
        "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\nmessage_store = off\n{extra}"
    );
    let config = Config::parse(&text, "test.conf").expect("test config");
    let server = Server::start(config).await.expect("broker starts");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Starts a broker relaying to a sidecar on `sidecar_port` (`extra` adds config lines), with
/// `plugins` registered beside the relay; returns it, its MQTT address and the relay plugin.
pub async fn relay_broker(
    sidecar_port: u16,
    extra: &str,
    plugins: Vec<Arc<dyn Plugin>>,
) -> (Server, SocketAddr, Arc<EventsSidecar>) {
    let text = format!(
        "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\nmessage_store = off\n\
         plugins.vmq_events_sidecar = on\n\
         vmq_events_sidecar.port = {sidecar_port}\n{extra}"
    );
    let config = Config::parse(&text, "relay.conf").expect("relay config");
    let server = Server::start_with_plugins(config, plugins)
        .await
        .expect("broker starts");
    let addr = server.local_addrs()[0];
    let relay = server.plugin::<EventsSidecar>().expect("relay on");
    (server, addr, relay)
}

/// A rumqttc (MQTT 3.1.1) client whose incoming packets arrive on a channel.
pub struct V4Client {
    /// The client handle.
    pub client: rumqttc::AsyncClient,
    /// Incoming packets, in order.
    pub incoming: mpsc::UnboundedReceiver<rumqttc::Packet>,
}

/// Connects a rumqttc v4 client and waits for its CONNACK; returns it with the CONNACK.
pub async fn v4_client(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    configure: impl FnOnce(&mut rumqttc::MqttOptions),
) -> (V4Client, rumqttc::ConnAck) {
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(30));
    configure(&mut opts);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, mut incoming) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let connack = loop {
        match timeout(WAIT, incoming.recv()).await {
            Ok(Some(rumqttc::Packet::ConnAck(c))) => break c,
            Ok(Some(_)) => {}
            other => panic!("no CONNACK for {id}: {other:?}"),
        }
    };
    (V4Client { client, incoming }, connack)
}

impl V4Client {
    /// The next incoming PUBLISH (other packets skipped), or a panic after [`WAIT`].
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            match timeout(WAIT, self.incoming.recv()).await {
                Ok(Some(rumqttc::Packet::Publish(p))) => return p,
                Ok(Some(_)) => {}
                other => panic!("no PUBLISH: {other:?}"),
            }
        }
    }

    /// Waits for the SUBACK of the subscription just made.
    pub async fn suback(&mut self) -> rumqttc::SubAck {
        loop {
            match timeout(WAIT, self.incoming.recv()).await {
                Ok(Some(rumqttc::Packet::SubAck(s))) => return s,
                Ok(Some(_)) => {}
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    /// Asserts that no PUBLISH arrives within `quiet`.
    pub async fn no_publish_within(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) | Ok(None) => return,
                Ok(Some(rumqttc::Packet::Publish(p))) => panic!("unexpected PUBLISH {p:?}"),
                Ok(Some(_)) => {}
            }
        }
    }
}

/// A raw MQTT client speaking through our codec, for malformed and unusual input.
pub struct Raw {
    /// The framed socket.
    pub framed: Framed<TcpStream, MqttCodec>,
}

impl Raw {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            framed: Framed::new(stream, MqttCodec::for_client(protocol, 1 << 20)),
        }
    }

    /// Opens a connection and sends CONNECT; returns the client and the server's answer.
    pub async fn connect(
        addr: SocketAddr,
        protocol: Protocol,
        id: &str,
        keep_alive: u16,
    ) -> (Raw, Packet) {
        let mut raw = Raw::open(addr, protocol).await;
        raw.send(Packet::Connect(Box::new(Connect {
            protocol,
            clean_start: true,
            keep_alive,
            client_id: id.into(),
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
        })))
        .await;
        let ack = raw.recv().await.expect("CONNACK");
        (raw, ack)
    }

    /// Sends a packet.
    pub async fn send(&mut self, p: Packet) {
        self.framed.send(&p).await.expect("send");
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.framed.get_mut().write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        match timeout(WAIT, self.framed.next()).await {
            Ok(Some(Ok(p))) => Some(p),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("server neither answered nor closed within {WAIT:?}"),
        }
    }

    /// Reads until the server closes, returning the last packet it sent.
    pub async fn until_closed(&mut self) -> Option<Packet> {
        let mut last = None;
        while let Some(p) = self.recv().await {
            last = Some(p);
        }
        last
    }
}

/// A CONNECT packet.
pub fn connect(protocol: Protocol, id: &str, clean: bool, properties: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: clean,
        keep_alive: 0,
        client_id: id.into(),
        username: None,
        password: None,
        will: None,
        properties,
    }))
}

/// A SUBSCRIBE of one filter (packet id 1).
pub fn subscribe(filter: &str, options: SubOptions) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(filter.into(), options)],
        properties: Properties::default(),
    })
}

/// A PUBLISH.
pub fn publish(topic: &str, qos: QoS, id: u16, retain: bool, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: id,
        payload: Bytes::from(payload.to_owned()),
        properties: Properties::default(),
    })
}

/// Connects a raw client; returns it with CONNACK's session present flag.
pub async fn session(
    addr: std::net::SocketAddr,
    p: Protocol,
    id: &str,
    clean: bool,
    props: Properties,
) -> (Raw, bool) {
    let mut raw = Raw::open(addr, p).await;
    raw.send(connect(p, id, clean, props)).await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) if a.code == ConnAckReason::Success => (raw, a.session_present),
        other => panic!("connect {id}: {other:?}"),
    }
}

/// The next packet, which must be a PUBLISH.
pub async fn expect_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Proves nothing else is pending: a PINGREQ is answered before any other packet.
pub async fn nothing_pending(raw: &mut Raw) {
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}
