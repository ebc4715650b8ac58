//! `vmq-bench`: a load generator for MQTT brokers (ours, mosquitto, any 3.1.1 broker), and for
//! the sidecar SDK's ingest rate.
//!
//! ```text
//! vmq-bench pubsub --port 1883 --scenario fan-in --publishers 8 --qos 0 --payload 64 --duration 10
//! vmq-bench pubsub --scenario latency --rate 10000 --duration 10
//! vmq-bench idle --port 1883 --connections 10000 --broker-pid 1234
//! vmq-bench sdk-ingest --connections 4 --duration 5
//! ```
//! Every message carries its send time and sequence number in its first 16 bytes: subscribers
//! compute latency and loss from them. `--json` prints one JSON object for scripts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;

mod probe;
mod pubsub;
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use probe::rss_kib;
use pubsub::{PubSub, pubsub};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;
use vmq_broker::mqtt::{
    ConnAckReason, Connect, MqttCodec, Packet, Properties, Protocol, QoS, SubOptions, Subscribe,
};

#[derive(Parser, Debug)]
#[command(about = "Load generator for MQTT brokers and the events sidecar SDK")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publishers and subscribers through a broker.
    Pubsub(PubSub),
    /// Many idle connections, to measure the broker's memory per connection.
    Idle(Idle),
    /// Events per second an SDK sidecar server ingests from synthetic producers.
    SdkIngest(Ingest),
    /// CONNECT rate: clients connecting and disconnecting in a loop (each with its own client
    /// id, the same every time, so an auth cache keyed by client id can hit).
    Connect(ConnectRate),
}

#[derive(clap::Args, Debug)]
struct ConnectRate {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// User name sent in CONNECT (with password `secret`).
    #[arg(long)]
    username: Option<String>,
}

#[derive(clap::Args, Debug)]
struct Idle {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// PID of the broker, whose RSS is read before and after.
    #[arg(long)]
    broker_pid: u32,
    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 4)]
    sources: u8,
}

#[derive(clap::Args, Debug)]
struct Ingest {
    /// Producer connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Payload of the synthetic OnPublish events.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

type Conn = Framed<TcpStream, MqttCodec>;

async fn connect(addr: SocketAddr, id: String, source: Option<IpAddr>) -> anyhow::Result<Conn> {
    connect_with(addr, id, source, true).await
}

async fn connect_with(
    addr: SocketAddr,
    id: String,
    source: Option<IpAddr>,
    clean: bool,
) -> anyhow::Result<Conn> {
    connect_as(addr, id, source, clean, None).await
}

async fn connect_as(
    addr: SocketAddr,
    id: String,
    source: Option<IpAddr>,
    clean: bool,
    username: Option<String>,
) -> anyhow::Result<Conn> {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(stream, MqttCodec::for_client(Protocol::V311, 1 << 24));
    conn.send(&Packet::Connect(Box::new(Connect {
        protocol: Protocol::V311,
        clean_start: clean,
        keep_alive: 600,
        client_id: id,
        password: username.as_ref().map(|_| Bytes::from_static(b"secret")),
        username,
        will: None,
        properties: Properties::default(),
    })))
    .await?;
    match conn.next().await {
        Some(Ok(Packet::ConnAck(a))) if a.code == ConnAckReason::Success => Ok(conn),
        other => bail!("CONNECT refused: {other:?}"),
    }
}

async fn subscribe(conn: &mut Conn, filter: &str, qos: QoS) -> anyhow::Result<()> {
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            filter.into(),
            SubOptions {
                qos,
                ..Default::default()
            },
        )],
        properties: Properties::default(),
    }))
    .await?;
    loop {
        match conn.next().await {
            Some(Ok(Packet::SubAck(_))) => return Ok(()),
            Some(Ok(_)) => {}
            other => bail!("no SUBACK: {other:?}"),
        }
    }
}

/// A flat JSON object from already-encoded values.
fn serde_like_json(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

async fn idle(a: Idle, json: bool) -> anyhow::Result<()> {
    let addr = SocketAddr::new(a.host, a.port);
    let before = rss_kib(a.broker_pid)?;
    let mut conns = Vec::with_capacity(a.connections);
    let run = now_ns();
    for i in 0..a.connections {
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(a.sources.max(1))) as u8,
        ));
        conns.push(connect(addr, format!("idle-{run}-{i}"), Some(source)).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(a.broker_pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / a.connections as f64;
    if json {
        println!(
            "{}",
            serde_like_json(&[
                ("connections", a.connections.to_string()),
                ("rss_before_kib", before.to_string()),
                ("rss_after_kib", after.to_string()),
                ("bytes_per_connection", format!("{per:.0}")),
            ])
        );
    } else {
        println!(
            "{} idle connections: RSS {before} KiB -> {after} KiB, {per:.0} bytes per connection",
            a.connections
        );
    }
    drop(conns);
    Ok(())
}

async fn sdk_ingest(a: Ingest, json: bool) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;
    let server = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await?;
    let addr = server.local_addr()?;
    let stats = server.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    tokio::spawn(server.serve(move |_e: vmq_sidecar_sdk::Event| {
        c.fetch_add(1, Relaxed);
        async {}
    }));
    // A buffer of frames, written again and again.
    let mut block = BytesMut::new();
    let mut codec = vmq_sidecar_sdk::EventCodec::new();
    for _ in 0..1000 {
        codec.encode(vmq_sidecar_sdk::testing::publish(a.payload), &mut block)?;
    }
    let block: Bytes = block.freeze();
    let mut producers = Vec::new();
    for _ in 0..a.connections {
        let (block, stop) = (block.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            while !stop.load(Relaxed) {
                s.write_all(&block).await?;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = counted.load(Relaxed);
    let bytes_before = stats.snapshot().bytes;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let events = counted.load(Relaxed) - before;
    let bytes = stats.snapshot().bytes - bytes_before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for p in producers {
        let _ = p.await;
    }
    let rate = events as f64 / elapsed;
    let mbps = bytes as f64 / elapsed / (1024.0 * 1024.0);
    if json {
        println!(
            "{}",
            serde_like_json(&[
                ("connections", a.connections.to_string()),
                ("payload", a.payload.to_string()),
                ("events_per_s", format!("{rate:.0}")),
                ("mib_per_s", format!("{mbps:.1}")),
            ])
        );
    } else {
        println!(
            "SDK ingest over {} connections: {rate:.0} events/s, {mbps:.1} MiB/s",
            a.connections
        );
    }
    Ok(())
}

async fn connect_rate(a: ConnectRate, json: bool) -> anyhow::Result<()> {
    let addr = SocketAddr::new(a.host, a.port);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (stop, done, user) = (stop.clone(), done.clone(), a.username.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let mut c =
                    connect_as(addr, format!("connect-{i}"), None, true, user.clone()).await?;
                c.send(&Packet::Disconnect(Default::default())).await?;
                // The broker closes after DISCONNECT: the session is gone before the next.
                while c.next().await.is_some() {}
                done.fetch_add(1, Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = done.load(Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let n = done.load(Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / elapsed;
    if json {
        println!(
            "{}",
            serde_like_json(&[
                ("clients", a.clients.to_string()),
                ("connects_per_s", format!("{rate:.0}")),
            ])
        );
    } else {
        println!(
            "{} clients: {rate:.0} CONNECT/CONNACK/DISCONNECT per second",
            a.clients
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Pubsub(a) => pubsub(a, args.json).await,
        Cmd::Idle(a) => idle(a, args.json).await,
        Cmd::SdkIngest(a) => sdk_ingest(a, args.json).await,
        Cmd::Connect(a) => connect_rate(a, args.json).await,
    }
}
