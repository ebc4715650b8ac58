//! The message store as an operator meets it: the `vmq-broker` binary killed with SIGKILL and
//! restarted on the same data directory, real clients (rumqttc) on both sides and a sidecar
//! built on the SDK watching the deliveries; damaged store files refused with a clear error.

mod support;

use std::path::Path;
use std::process::Command;

use futures::StreamExt;
use rumqttc::{Incoming, QoS};
use support::{WAIT, broker_bin, start_broker, terminate, wait_with_timeout};
use tokio::time::timeout;
use vmq_sidecar_sdk::Event as SidecarEvent;

const MESSAGES: usize = 1000;

fn config(dir: &Path, sidecar_port: u16) -> std::path::PathBuf {
    let conf = dir.join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\n\
             persistent_data_dir = {}\nmax_offline_messages = 5000\n\
             plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {sidecar_port}\n\
             vmq_events_sidecar.hooks = on_deliver\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    conf
}

use support::{poll_until, v4_client as client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_in_order_and_are_delivered_as_persisted() {
    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let sidecar_port = sidecar.local_addr().unwrap().port();
    let mut events = sidecar.into_stream(4096);
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), sidecar_port);
    let (broker, port) = start_broker(&conf);

    // A persistent subscriber subscribes, then goes away.
    let (sub, mut sub_loop) = client("durable-sub", &port, false);
    sub.subscribe("orders/#", QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut sub_loop, |p| matches!(p, Incoming::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    let _ = timeout(WAIT, async { while sub_loop.poll().await.is_ok() {} }).await;

    // 1,000 QoS 1 messages, every one acknowledged by the broker.
    let (publisher, mut pub_loop) = client("producer", &port, true);
    tokio::spawn(async move {
        for i in 0..MESSAGES {
            publisher
                .publish("orders/new", QoS::AtLeastOnce, false, format!("{i}"))
                .await
                .unwrap();
        }
    });
    let mut acked = 0;
    poll_until(&mut pub_loop, |p| {
        acked += usize::from(matches!(p, Incoming::PubAck(_)));
        acked == MESSAGES
    })
    .await;

    // SIGKILL: no shutdown code runs.
    let mut broker = broker;
    broker.kill();
    drop(pub_loop);

    let (broker, port) = start_broker(&conf);
    let (_sub, mut sub_loop) = client("durable-sub", &port, false);
    let mut received = Vec::new();
    let mut session_present = false;
    poll_until(&mut sub_loop, |p| {
        match p {
            Incoming::ConnAck(c) => session_present = c.session_present,
            Incoming::Publish(p) => {
                received.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            _ => {}
        }
        received.len() == MESSAGES
    })
    .await;
    assert!(session_present, "the session came back from the store");
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(received, expected, "all of them, in order");

    let mut delivered = Vec::new();
    while delivered.len() < MESSAGES {
        let e = timeout(WAIT, events.next())
            .await
            .expect("on_deliver events arrive")
            .unwrap();
        let SidecarEvent::OnDeliver(d) = e else {
            panic!("unexpected event {e:?}");
        };
        assert_eq!(d.client_id, "durable-sub");
        assert!(d.persisted, "delivered from the store: {d:?}");
        delivered.push(String::from_utf8_lossy(&d.payload).into_owned());
    }
    assert_eq!(delivered, expected);
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

/// Runs the broker on `conf` expecting it to refuse to start; returns its stderr.
fn refused_start(conf: &Path) -> String {
    let out = Command::new(broker_bin())
        .arg("--config")
        .arg(conf)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the broker must not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_store_file_that_is_not_a_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), 1);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/store.redb"),
        b"this is not a database".repeat(500),
    )
    .unwrap();
    let err = refused_start(&conf);
    assert!(err.contains("cannot open the message store"), "{err}");
    assert!(err.contains("store.redb"), "{err}");
}

#[test]
fn a_data_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), 1);
    // A file where the data directory should be.
    std::fs::write(dir.path().join("data"), b"").unwrap();
    let err = refused_start(&conf);
    assert!(err.contains("cannot create the data directory"), "{err}");
}

#[test]
fn two_brokers_on_one_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), 1);
    let (first, _) = start_broker(&conf);
    let err = refused_start(&conf);
    assert!(err.contains("cannot open the message store"), "{err}");
    terminate(&first);
    assert!(wait_with_timeout(first).status.success());
}

#[test]
fn a_truncated_store_is_a_clear_error_naming_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), 1);
    let (broker, port) = start_broker(&conf);
    // A persistent session with some queued messages, so the file has content.
    let sub = Command::new("mosquitto_sub")
        .args([
            "-p", &port, "-i", "keep", "-c", "-q", "1", "-t", "t/#", "-W", "1",
        ])
        .output()
        .unwrap();
    assert!(sub.status.code().is_some());
    let lines: String = (0..200)
        .map(|i| format!("message {i} {}\n", "x".repeat(400)))
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-p", &port, "-q", "1", "-t", "t/1", "-l"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(publisher.wait().unwrap().success());
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());

    let file = dir.path().join("data/store.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let err = refused_start(&conf);
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("move it away"), "{err}");
}
