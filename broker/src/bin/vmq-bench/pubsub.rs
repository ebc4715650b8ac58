//! The `pubsub` subcommand: publishers and subscribers in a scenario (fan-in, fan-out,
//! pairwise, latency), optionally a SUBSCRIBE storm beside them; throughput, loss, latency
//! percentiles, and the CPU time of the processes named with `--cpu-pid`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use clap::ValueEnum;
use futures::{SinkExt, StreamExt};
use vmq_broker::mqtt::{Packet, Properties, PubResp, Publish, QoS, SubOptions, Subscribe};

use crate::probe::{cpu_ms, metric_sum};
use crate::{Conn, connect, connect_as, now_ns, serde_like_json, subscribe};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N publishers -> 1 subscriber on `#`.
    FanIn,
    /// 1 publisher -> N subscribers.
    FanOut,
    /// N publishers, each to its own subscriber.
    Pairwise,
    /// 1 publisher -> 1 subscriber at a fixed rate.
    Latency,
}

#[derive(clap::Args, Debug)]
pub struct PubSub {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// The broker the subscribers connect to, when not --host (another node of a cluster).
    #[arg(long)]
    sub_host: Option<IpAddr>,
    /// Its port (default: --port).
    #[arg(long)]
    sub_port: Option<u16>,
    /// Seconds to wait after the subscriptions before publishing (for a cluster: until the
    /// other nodes know the new routes).
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    #[arg(long, value_enum, default_value = "fan-in")]
    scenario: Scenario,
    /// Publishers (fan-in, pairwise) or subscribers (fan-out).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Messages per second per publisher; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// QoS 1/2 messages a publisher keeps unacknowledged.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Subscribers keep persistent sessions (clean_session=false), so a broker with a message
    /// store writes their QoS 1/2 messages; the sessions are discarded after the run.
    #[arg(long)]
    persistent: bool,
    /// Processes whose CPU time (user + system, all threads) during the measurement is
    /// reported, in order, as `cpu_ms` (e.g. the broker and a sidecar).
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// During the run, a client on this port (a listener with another mountpoint) sends
    /// SUBSCRIBE and UNSUBSCRIBE packets at --storm-rate per second: does a subscription storm
    /// elsewhere slow this run's publishes down?
    #[arg(long)]
    storm_port: Option<u16>,
    /// SUBSCRIBEs per second of the storm (each followed by an UNSUBSCRIBE of an older one).
    #[arg(long, default_value_t = 1000)]
    storm_rate: u64,
    /// User name every client sends in CONNECT (with password `secret`).
    #[arg(long)]
    username: Option<String>,
    /// A broker's HTTP listener (`host:port`): the relayed events (`sidecar_events`, all hooks)
    /// during the measurement are reported as `events`, to put a sidecar's CPU per event.
    #[arg(long)]
    events_metrics: Option<SocketAddr>,
}

/// Sends SUBSCRIBE (a new filter each time) and UNSUBSCRIBE (of the filter subscribed 100
/// before) at `rate` per second, without waiting for the acknowledgements (a task reads them),
/// until `stop`. Returns the number of SUBSCRIBEs sent.
async fn storm(mut conn: Conn, rate: u64, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    use futures::FutureExt;
    use vmq_broker::mqtt::Unsubscribe;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    while !stop.load(Relaxed) {
        tick.tick().await;
        // Acknowledgements read as they come, never waited for.
        while let Some(Some(Ok(_))) = conn.next().now_or_never() {}
        let id = (n % 60_000) as u16 + 1;
        conn.send(&Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: vec![(
                format!("storm/{n}/+/#"),
                SubOptions {
                    qos: QoS::AtMostOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        }))
        .await?;
        if n >= 100 {
            conn.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                filters: vec![format!("storm/{}/+/#", n - 100)],
                properties: Properties::default(),
            }))
            .await?;
        }
        n += 1;
    }
    Ok(n)
}

/// Shared counters of a run.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    received: AtomicU64,
}

/// What one publisher sends.
struct PubSpec {
    topic: String,
    qos: QoS,
    payload: usize,
    /// Messages per second; 0: as fast as possible.
    rate: u64,
    /// Unacknowledged QoS 1/2 messages allowed.
    inflight_max: usize,
}

/// Publishes until `stop`; counts into `tally`.
async fn publisher(
    mut conn: Conn,
    spec: PubSpec,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let PubSpec {
        topic,
        qos,
        payload,
        rate,
        inflight_max,
    } = spec;
    let mut seq = 0u64;
    let mut inflight = 0usize;
    let mut next_id = 0u16;
    let pad = vec![0x5au8; payload.saturating_sub(16)];
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut tick = interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    while !stop.load(Relaxed) {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        // Wait for acknowledgements while the window is full.
        while qos != QoS::AtMostOnce && inflight >= inflight_max {
            conn.flush().await?;
            let item = tokio::select! {
                item = conn.next() => item,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Relaxed) { return Ok(()) } else { continue }
                }
            };
            match item {
                Some(Ok(Packet::PubAck(_) | Packet::PubComp(_))) => inflight -= 1,
                Some(Ok(Packet::PubRec(r))) => {
                    conn.feed(&Packet::PubRel(PubResp::ok(r.packet_id))).await?
                }
                Some(Ok(_)) => {}
                other => bail!("publisher connection ended: {other:?}"),
            }
        }
        let mut body = BytesMut::with_capacity(payload.max(16));
        body.put_u64(now_ns());
        body.put_u64(seq);
        body.put_slice(&pad);
        seq += 1;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            next_id = next_id.wrapping_add(1).max(1);
            inflight += 1;
            next_id
        };
        conn.feed(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            packet_id,
            payload: body.freeze(),
            properties: Properties::default(),
        }))
        .await?;
        tally.sent.fetch_add(1, Relaxed);
        // At full speed, flush every few messages so batches form; at a fixed rate, at once.
        if interval.is_some() || seq.is_multiple_of(32) {
            conn.flush().await?;
        }
        // Drain acknowledgements that are already there without waiting.
        if qos != QoS::AtMostOnce {
            while let Some(Some(item)) = futures::FutureExt::now_or_never(conn.next()) {
                match item? {
                    Packet::PubAck(_) | Packet::PubComp(_) => inflight -= 1,
                    Packet::PubRec(r) => {
                        conn.feed(&Packet::PubRel(PubResp::ok(r.packet_id))).await?
                    }
                    _ => {}
                }
            }
        }
    }
    // No final flush: a broker still digesting a backlog must not hold the run up.
    drop(conn);
    Ok(())
}

/// Receives until `stop`; records latencies (µs) of messages received in the window.
async fn subscriber(
    mut conn: Conn,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::new();
    while !stop.load(Relaxed) {
        let item = tokio::select! {
            item = conn.next() => item,
            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        let mut item = item;
        let mut acks = false;
        // Handle this packet and every one already buffered, then flush the acknowledgements.
        loop {
            match item {
                Some(Ok(Packet::Publish(p))) => {
                    if p.qos == QoS::AtLeastOnce {
                        conn.feed(&Packet::PubAck(PubResp::ok(p.packet_id))).await?;
                        acks = true;
                    } else if p.qos == QoS::ExactlyOnce {
                        conn.feed(&Packet::PubRec(PubResp::ok(p.packet_id))).await?;
                        acks = true;
                    }
                    if measuring.load(Relaxed) && p.payload.len() >= 8 {
                        tally.received.fetch_add(1, Relaxed);
                        let sent =
                            u64::from_be_bytes(p.payload[..8].try_into().unwrap_or_default());
                        let us = now_ns().saturating_sub(sent) / 1000;
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                }
                Some(Ok(Packet::PubRel(r))) => {
                    conn.feed(&Packet::PubComp(PubResp::ok(r.packet_id)))
                        .await?;
                    acks = true;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("subscriber: {e}"),
                None => return Ok(latencies),
            }
            match futures::FutureExt::now_or_never(conn.next()) {
                Some(next) => item = next,
                None => break,
            }
        }
        if acks {
            conn.flush().await?;
        }
    }
    Ok(latencies)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn pubsub(a: PubSub, json: bool) -> anyhow::Result<()> {
    let addr = SocketAddr::new(a.host, a.port);
    let sub_addr = SocketAddr::new(a.sub_host.unwrap_or(a.host), a.sub_port.unwrap_or(a.port));
    let qos = QoS::from_u8(a.qos).context("qos must be 0, 1 or 2")?;
    if a.payload < 16 {
        bail!("--payload must be at least 16 bytes (timestamp and sequence)");
    }
    let run = now_ns();
    let (publishers, subscribers, copies): (Vec<String>, Vec<String>, u64) = match a.scenario {
        Scenario::FanIn => (
            (0..a.clients).map(|i| format!("bench/{run}/{i}")).collect(),
            vec![format!("bench/{run}/#")],
            1,
        ),
        Scenario::FanOut => (
            vec![format!("bench/{run}/x")],
            (0..a.clients).map(|_| format!("bench/{run}/x")).collect(),
            a.clients as u64,
        ),
        Scenario::Pairwise => {
            let t: Vec<String> = (0..a.clients).map(|i| format!("bench/{run}/{i}")).collect();
            (t.clone(), t, 1)
        }
        Scenario::Latency => (
            vec![format!("bench/{run}/l")],
            vec![format!("bench/{run}/l")],
            1,
        ),
    };
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut subs = Vec::new();
    for (i, filter) in subscribers.iter().enumerate() {
        let id = format!("bench-sub-{run}-{i}");
        let mut c = connect_as(sub_addr, id, None, !a.persistent, a.username.clone()).await?;
        subscribe(&mut c, filter, qos).await?;
        subs.push(tokio::spawn(subscriber(
            c,
            tally.clone(),
            stop.clone(),
            measuring.clone(),
        )));
    }
    if a.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    }
    let mut pubs = Vec::new();
    for (i, topic) in publishers.iter().enumerate() {
        let id = format!("bench-pub-{run}-{i}");
        let c = connect_as(addr, id, None, true, a.username.clone()).await?;
        let rate = if a.scenario == Scenario::Latency && a.rate == 0 {
            10_000
        } else {
            a.rate
        };
        let spec = PubSpec {
            topic: topic.clone(),
            qos,
            payload: a.payload,
            rate,
            inflight_max: a.inflight,
        };
        pubs.push(tokio::spawn(publisher(
            c,
            spec,
            tally.clone(),
            stop.clone(),
        )));
    }
    let storm = match a.storm_port {
        Some(port) => {
            let c = connect(
                SocketAddr::new(a.host, port),
                format!("bench-storm-{run}"),
                None,
            )
            .await?;
            Some(tokio::spawn(storm(c, a.storm_rate, stop.clone())))
        }
        None => None,
    };
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_before = tally.sent.load(Relaxed);
    let cpu_before = a
        .cpu_pids
        .iter()
        .map(|p| cpu_ms(*p))
        .collect::<Result<Vec<_>, _>>()?;
    let events_before = a
        .events_metrics
        .map(|m| metric_sum(m, "sidecar_events"))
        .transpose()?;
    measuring.store(true, Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    measuring.store(false, Relaxed);
    let cpu: Vec<u64> = a
        .cpu_pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_ms(*p).map(|now| now.saturating_sub(*before)))
        .collect::<Result<_, _>>()?;
    let events = match (a.events_metrics, events_before) {
        (Some(m), Some(before)) => Some(metric_sum(m, "sidecar_events")? - before),
        _ => None,
    };
    let elapsed = start.elapsed().as_secs_f64();
    let sent = tally.sent.load(Relaxed) - sent_before;
    let received = tally.received.load(Relaxed);
    stop.store(true, Relaxed);
    // Clients stop at once; a client stuck on an overloaded broker is abandoned after 2 s.
    let give_up = Duration::from_secs(2);
    for p in pubs {
        match tokio::time::timeout(give_up, p).await {
            Ok(r) => r??,
            Err(_) => eprintln!("vmq-bench: a publisher did not stop in time"),
        }
    }
    let storm_subscribes = match storm {
        Some(t) => match tokio::time::timeout(give_up, t).await {
            Ok(r) => Some(r??),
            Err(_) => None,
        },
        None => None,
    };
    if let Some(n) = storm_subscribes {
        eprintln!("vmq-bench: the storm client sent {n} SUBSCRIBEs");
    }
    let mut latencies = Vec::new();
    for s in subs {
        match tokio::time::timeout(give_up, s).await {
            Ok(r) => latencies.extend(r??),
            Err(_) => eprintln!("vmq-bench: a subscriber did not stop in time"),
        }
    }
    if a.persistent {
        // A clean connection discards each persistent session (and what is queued for it).
        for i in 0..subscribers.len() {
            let c = connect(addr, format!("bench-sub-{run}-{i}"), None).await?;
            drop(c);
        }
    }
    latencies.sort_unstable();
    let expected = sent * copies;
    let loss = if expected > 0 {
        expected.saturating_sub(received) as f64 / expected as f64
    } else {
        0.0
    };
    let (p50, p90, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
    );
    let sent_rate = sent as f64 / elapsed;
    let recv_rate = received as f64 / elapsed;
    if json {
        let mut fields = vec![
            ("scenario", format!("\"{:?}\"", a.scenario)),
            ("qos", a.qos.to_string()),
            ("clients", a.clients.to_string()),
            ("payload", a.payload.to_string()),
            ("sent_per_s", format!("{sent_rate:.0}")),
            ("received_per_s", format!("{recv_rate:.0}")),
            ("loss", format!("{loss:.6}")),
            ("p50_us", p50.to_string()),
            ("p90_us", p90.to_string()),
            ("p99_us", p99.to_string()),
            ("max_us", max.to_string()),
            (
                "cpu_ms",
                format!(
                    "[{}]",
                    cpu.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                ),
            ),
        ];
        if let Some(events) = events {
            fields.push(("events", format!("{events:.0}")));
        }
        println!("{}", serde_like_json(&fields));
    } else {
        println!(
            "{:?} qos {} x{}: sent {sent_rate:.0}/s, received {recv_rate:.0}/s, loss {:.3}%, latency p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us",
            a.scenario,
            a.qos,
            a.clients,
            loss * 100.0
        );
    }
    Ok(())
}
