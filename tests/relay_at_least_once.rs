//! At-least-once events end to end: a broker relaying on_publish and on_deliver to the
//! `log_sidecar` example (a real process writing JSON lines to a file, acknowledging what it
//! has flushed), which is frozen and SIGKILLed five times while 100 clients publish 200
//! messages each. Every event must be in the file at least once, in per-client order once
//! re-sent lines are dropped; the same run at most once must lose events (which shows the test
//! can fail).

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::time::{Instant, sleep};
use vmq_broker::plugins::events_sidecar::EventsSidecar;
use vmq_tests::broker::{relay_broker, v4_client};
use vmq_tests::{WAIT, example, terminate, wait_with_timeout};

const CLIENTS: usize = 100;
const MESSAGES: usize = 200;
const KILLS: usize = 5;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_sidecar(port: u16, output: &Path) -> Child {
    Command::new(example("log_sidecar"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--output", output.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// What the file says: per (hook, publisher), the message numbers in file order, after dropping
/// the lines whose (epoch, lane, seq) came before; and how many lines were dropped.
struct Seen {
    order: HashMap<(String, usize), Vec<usize>>,
    duplicates: usize,
}

fn read_lines(output: &Path) -> Seen {
    let text = std::fs::read_to_string(output).unwrap();
    let mut keys = HashSet::new();
    let mut seen = Seen {
        order: HashMap::new(),
        duplicates: 0,
    };
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let event = match v.get("sequence") {
            Some(s) => {
                let key = (s["epoch"].as_u64(), s["lane"].as_u64(), s["seq"].as_u64());
                if !keys.insert(key) {
                    seen.duplicates += 1;
                    continue;
                }
                &v["event"]
            }
            None => &v,
        };
        let hook = event["@type"].as_str().unwrap().rsplit('.').next().unwrap();
        // Topics are alo/<publisher>/<message number>.
        let topic: Vec<&str> = event["topic"].as_str().unwrap().split('/').collect();
        let (publisher, n) = (topic[1].parse().unwrap(), topic[2].parse().unwrap());
        seen.order
            .entry((hook.to_owned(), publisher))
            .or_default()
            .push(n);
    }
    seen
}

/// Runs the scenario with `delivery`; returns what the file holds and the relay.
async fn run(delivery: &str) -> (Seen, Arc<EventsSidecar>) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("events.jsonl");
    let port = free_port();
    let mut sidecar = start_sidecar(port, &output);
    let (server, addr, relay) = relay_broker(
        port,
        &format!(
            "vmq_events_sidecar.delivery = {delivery}\n\
             vmq_events_sidecar.hooks = [on_publish, on_deliver]\n\
             vmq_events_sidecar.pool_size = 4\n\
             vmq_events_sidecar.backlog_size = 100000"
        ),
        vec![],
    )
    .await;

    let (mut subscriber, _) = v4_client(addr, "alo-sub", true, |_| {}).await;
    subscriber
        .client
        .subscribe("alo/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber.suback().await;
    let mut publishers = Vec::new();
    for i in 0..CLIENTS {
        let (p, _) = v4_client(addr, &format!("alo-pub-{i}"), true, |_| {}).await;
        publishers.push(tokio::spawn(async move {
            for n in 0..MESSAGES {
                p.client
                    .publish(format!("alo/{i}/{n}"), QoS::AtLeastOnce, false, "x")
                    .await
                    .unwrap();
                sleep(Duration::from_millis(20)).await;
            }
            p
        }));
    }

    // While they publish: the sidecar hangs (its socket buffers fill with events it will never
    // read), then is killed, and started again.
    for _ in 0..KILLS {
        sleep(Duration::from_millis(400)).await;
        signal(&sidecar, "-STOP");
        sleep(Duration::from_millis(300)).await;
        sidecar.kill().unwrap();
        sidecar.wait().unwrap();
        sidecar = start_sidecar(port, &output);
    }
    for p in publishers {
        drop(p.await.unwrap());
    }
    let mut received = 0;
    while received < CLIENTS * MESSAGES {
        if let Some(rumqttc::Packet::Publish(_)) =
            tokio::time::timeout(WAIT, subscriber.incoming.recv())
                .await
                .expect("the subscriber gets every message")
        {
            received += 1;
        }
    }
    // Everything written (and, at least once, acknowledged), then a graceful stop: flushed.
    let start = Instant::now();
    while relay.backlog() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} events never left",
            relay.backlog()
        );
        sleep(Duration::from_millis(50)).await;
    }
    terminate(&sidecar);
    assert!(wait_with_timeout(sidecar).status.success());
    drop(server);
    (read_lines(&output), relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_survives_a_sidecar_killed_five_times() {
    let (seen, relay) = run("at_least_once").await;
    let m = relay.metrics();
    let resent = m.resent.load(std::sync::atomic::Ordering::Relaxed);
    let acked = m.acked.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "at least once: {resent} events re-sent, {} duplicate lines dropped, {acked} acknowledged",
        seen.duplicates
    );
    for hook in ["OnPublish", "OnDeliver"] {
        for publisher in 0..CLIENTS {
            let order = seen
                .order
                .get(&(hook.to_owned(), publisher))
                .unwrap_or_else(|| panic!("no {hook} of publisher {publisher}"));
            assert_eq!(
                order,
                &(0..MESSAGES).collect::<Vec<_>>(),
                "{hook} of publisher {publisher}: every event once, in order"
            );
        }
    }
    assert!(resent > 0, "the kills made the broker send events again");
    assert_eq!(m.total_dropped(), 0, "nothing dropped");
    assert!(acked >= (2 * CLIENTS * MESSAGES) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_loses_events_when_the_sidecar_is_killed() {
    let (seen, relay) = run("at_most_once").await;
    let distinct: usize = seen
        .order
        .values()
        .map(|o| o.iter().collect::<HashSet<_>>().len())
        .sum();
    let expected = 2 * CLIENTS * MESSAGES;
    eprintln!(
        "at most once: {distinct} of {expected} events in the file, {} counted as dropped",
        relay.metrics().total_dropped()
    );
    assert!(
        distinct < expected,
        "killing the sidecar lost nothing: the at-least-once test proves nothing"
    );
}
