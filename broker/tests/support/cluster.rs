//! A cluster of `vmq-broker` processes for tests: nodes on 127.0.0.1/2/3 sharing a cluster
//! port, `vmq-admin` against each, MQTT clients, a sidecar per node, `/health`, partitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BrokerProcess, start_broker};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// One node: its process, config and addresses.
pub struct Node {
    pub name: String,
    pub ip: String,
    pub conf: PathBuf,
    broker: Option<BrokerProcess>,
    pub mqtt: String,
    pub http: String,
}

/// A port free on 127.0.0.1-4, for TCP and UDP (links and gossip share it).
pub fn shared_port() -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let free = (1..=4).all(|i| {
            let ip = format!("127.0.0.{i}:{port}");
            std::net::UdpSocket::bind(&ip).is_ok()
                && (i == 1 || std::net::TcpListener::bind(&ip).is_ok())
        });
        if free {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1-4");
}

pub fn write_conf(dir: &Path, i: u8, port: u16, extra: &str) -> PathBuf {
    let nd = dir.join(format!("n{i}"));
    std::fs::create_dir_all(&nd).unwrap();
    let conf = nd.join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "nodename = n{i}@127.0.0.{i}\n\
             listener.tcp.default = 127.0.0.{i}:0\n\
             listener.http.default = 127.0.0.{i}:0\n\
             listener.vmq.clustering = 127.0.0.{i}:{port}\n\
             allow_anonymous = on\n\
             persistent_data_dir = {}\n\
             outgoing_clustering_buffer_size = 1MB\n{extra}",
            nd.join("data").display()
        ),
    )
    .unwrap();
    conf
}

impl Node {
    pub fn start(dir: &Path, i: u8, port: u16, extra: &str) -> Node {
        let conf = write_conf(dir, i, port, extra);
        let mut n = Node {
            name: format!("n{i}@127.0.0.{i}"),
            ip: format!("127.0.0.{i}"),
            conf,
            broker: None,
            mqtt: String::new(),
            http: String::new(),
        };
        n.restart();
        n
    }

    pub fn restart(&mut self) {
        let (broker, mqtt) = start_broker(&self.conf);
        self.http = broker.http_port().to_owned();
        self.mqtt = mqtt;
        self.broker = Some(broker);
    }

    pub fn kill(&mut self) {
        if let Some(mut b) = self.broker.take() {
            b.kill();
        }
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vmq-admin"))
            .arg("--config")
            .arg(&self.conf)
            .arg("--url")
            .arg(format!("http://{}:{}", self.ip, self.http))
            .args(args)
            .output()
            .unwrap()
    }

    /// `vmq-admin cluster show` as rows of (column, value).
    pub fn show(&self) -> Vec<Vec<(String, String)>> {
        self.table(&["cluster", "show"])
    }

    /// A `vmq-admin` command's table as rows of (column, value).
    pub fn table(&self, args: &[&str]) -> Vec<Vec<(String, String)>> {
        let out = self.admin(args);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().filter(|l| l.starts_with('|'));
        let cells = |l: &str| -> Vec<String> {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        let Some(header) = lines.next().map(cells) else {
            return Vec::new();
        };
        lines
            .map(|l| header.iter().cloned().zip(cells(l)).collect())
            .collect()
    }

    /// The session id of `client_id`'s session on this node, if it has one.
    pub fn session_id(&self, client_id: &str) -> Option<String> {
        let rows = self.table(&[
            "session",
            "show",
            &format!("--client_id={client_id}"),
            "--session_id",
        ]);
        rows.into_iter().next().and_then(|row| {
            row.into_iter()
                .find(|(k, _)| k == "session_id")
                .map(|(_, v)| v)
        })
    }

    /// The value of `column` in the row of `node`, if listed.
    pub fn column(&self, node: &str, column: &str) -> Option<String> {
        self.show().into_iter().find_map(|row| {
            let listed = row.iter().any(|(k, v)| k == "Node" && v == node);
            listed
                .then(|| {
                    row.iter()
                        .find(|(k, _)| k == column)
                        .map(|(_, v)| v.clone())
                })
                .flatten()
        })
    }

    /// A metric's value from `/metrics` (the first sample whose line contains `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> u64 {
        let body = ureq::get(&format!("http://{}:{}/metrics", self.ip, self.http))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in /metrics"))
    }
}

/// Polls `check` every 100 ms for up to 15 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every node lists every other as running with its link up.
pub fn converged(nodes: &[&Node]) -> bool {
    nodes.iter().all(|n| {
        nodes.iter().filter(|o| o.name != n.name).all(|o| {
            n.column(&o.name, "Running").as_deref() == Some("true")
                && n.column(&o.name, "Link").as_deref() == Some("up")
        })
    })
}

pub fn client(id: &str, node: &Node, clean: bool) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, node.ip.clone(), node.mqtt.parse().unwrap());
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(opts, 1000)
}

/// Subscribes `filter` at QoS 1 and returns once SUBACK arrived.
pub async fn subscriber(id: &str, node: &Node, filter: &str) -> (AsyncClient, EventLoop) {
    let (c, mut ev) = client(id, node, true);
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.unwrap() {
            return (c, ev);
        }
    }
}

/// Receives publishes until `n` arrived or nothing came for 3 s; returns their payloads.
pub async fn receive(ev: &mut EventLoop, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(3), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned())
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber: {e}"),
            Err(_) => break,
        }
    }
    got
}

/// Publishes `payloads` at QoS 1 on `topic` and waits for every PUBACK.
pub async fn publish_all(node: &Node, id: &str, topic: &str, payloads: &[String]) {
    let (c, mut ev) = client(id, node, true);
    let n = payloads.len();
    let driver = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for p in payloads {
        c.publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("every PUBACK")
        .unwrap();
}

/// Connects and returns the client with CONNACK's session present flag.
pub async fn connect(id: &str, node: &Node, clean: bool) -> (AsyncClient, EventLoop, bool) {
    let (c, mut ev) = client(id, node, clean);
    loop {
        if let Event::Incoming(Packet::ConnAck(a)) = ev.poll().await.unwrap() {
            return (c, ev, a.session_present);
        }
    }
}

/// Publishes probes on `topic` from `node` (QoS 0) until each subscriber got one: the routes
/// to their nodes have reached `node`. Probes still in flight are received and dropped.
pub async fn until_routed(node: &Node, topic: &str, subscribers: &mut [&mut EventLoop]) {
    let start = Instant::now();
    for ev in subscribers.iter_mut() {
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no route to a subscriber"
            );
            let out = mosquitto("mosquitto_pub", node, &["-t", topic, "-m", "probe"]);
            assert!(out.status.success());
            let got = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if let Event::Incoming(Packet::Publish(_)) = ev.poll().await.unwrap() {
                        return;
                    }
                }
            })
            .await;
            if got.is_ok() {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for ev in subscribers.iter_mut() {
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), ev.poll()).await {}
    }
}

/// The number in `node`'s `Routes` column for `of`.
pub fn routes(node: &Node, of: &Node) -> usize {
    node.column(&of.name, "Routes")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn mosquitto(bin: &str, node: &Node, args: &[&str]) -> Output {
    Command::new(bin)
        .args(["-h", &node.ip, "-p", &node.mqtt])
        .args(args)
        .output()
        .unwrap()
}

/// The events one node's sidecar got: (hook, node, client id).
pub type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A sidecar (the SDK's server) collecting what it gets; the config lines that relay
/// `on_publish`, `on_deliver` and `on_offline_message` to it.
pub async fn sidecar() -> (Seen, String) {
    let mut events = vmq_sidecar_sdk::Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .into_stream(4096);
    let port = events.local_addr().unwrap().port();
    let seen = Seen::default();
    let into = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let row = (
                e.hook().to_owned(),
                e.node().unwrap_or_default().to_owned(),
                e.client_id().unwrap_or_default().to_owned(),
            );
            into.lock().unwrap().push(row);
        }
    });
    let conf = format!(
        "plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {port}\n\
         vmq_events_sidecar.hooks = [on_publish, on_deliver, on_offline_message]\n"
    );
    (seen, conf)
}

/// How many events of `hook` for `client_id` a sidecar got.
pub fn count(seen: &Seen, hook: &str, client_id: &str) -> usize {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|(h, _, c)| h == hook && c == client_id)
        .count()
}

/// `/health` of a node: (HTTP status, whether it says it is in quorum).
pub fn health(node: &Node) -> (u16, bool) {
    let r = ureq::get(&format!("http://{}:{}/health", node.ip, node.http))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.into_body().read_to_string().unwrap();
    (status, body.contains("\"quorum\":true"))
}

/// Cuts `node` off from `others` and them from it (both sides drop gossip and links).
pub fn partition(node: &Node, others: &[&Node]) {
    let names: Vec<&str> = others.iter().map(|o| o.name.as_str()).collect();
    let out = node.admin(&[
        "cluster",
        "partition",
        &format!("block={}", names.join(",")),
    ]);
    assert!(out.status.success(), "{out:?}");
    for o in others {
        let out = o.admin(&["cluster", "partition", &format!("block={}", node.name)]);
        assert!(out.status.success(), "{out:?}");
    }
}

pub fn heal(nodes: &[&Node]) {
    for n in nodes {
        let out = n.admin(&["cluster", "partition", "heal"]);
        assert!(out.status.success(), "{out:?}");
    }
}
