//! The counters going out as VerneMQ sends them: the `$SYS` tree (messages on
//! `$SYS/<nodename>/...` that `#` does not match) and Graphite plaintext lines over TCP; and
//! `topic_max_depth`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::QoS;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;
use vmq_tests::WAIT;
use vmq_tests::broker::{start_broker, v4_client};

const RECEIVED: &str = "$SYS/VerneMQ@127.0.0.1/mqtt/publish/received";

/// The value of the next `$SYS` message for the publish counter.
async fn next_received_count(sys: &mut vmq_tests::broker::V4Client) -> u64 {
    loop {
        let p = sys.next_publish().await;
        if p.topic == RECEIVED {
            return std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sys_tree_carries_counters_that_move_and_hash_does_not_match_it() {
    let (_server, addr) = start_broker("systree_interval = 100\n").await;
    let (mut sys, _) = v4_client(addr, "sys", true, |_| {}).await;
    sys.client
        .subscribe("$SYS/#", QoS::AtMostOnce)
        .await
        .unwrap();
    sys.suback().await;
    let (mut all, _) = v4_client(addr, "all", true, |_| {}).await;
    all.client.subscribe("#", QoS::AtMostOnce).await.unwrap();
    all.suback().await;

    let before = next_received_count(&mut sys).await;
    let (publisher, _) = v4_client(addr, "pub", true, |_| {}).await;
    for i in 0..5 {
        publisher
            .client
            .publish("plain/topic", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    // `#` gets the five publishes and nothing from $SYS.
    for _ in 0..5 {
        assert_eq!(all.next_publish().await.topic, "plain/topic");
    }
    // The counter moves with the traffic.
    let after = timeout(WAIT, async {
        loop {
            let n = next_received_count(&mut sys).await;
            if n >= before + 5 {
                return n;
            }
        }
    })
    .await
    .expect("the $SYS counter moves");
    assert!(after >= before + 5);
    // Several $SYS rounds went by; `#` saw none of them.
    all.no_publish_within(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphite_receives_name_value_timestamp_lines() {
    let graphite = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = graphite.local_addr().unwrap().port();
    let (_server, addr) = start_broker(&format!(
        "graphite_enabled = on\ngraphite_host = 127.0.0.1\ngraphite_port = {port}\n\
         graphite_interval = 100\ngraphite_prefix = vmq\nsystree_enabled = off\n"
    ))
    .await;
    let (publisher, _) = v4_client(addr, "pub", true, |_| {}).await;
    publisher
        .client
        .publish("t", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let (socket, _) = timeout(WAIT, graphite.accept()).await.unwrap().unwrap();
    let mut lines = BufReader::new(socket).lines();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let received = timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a line");
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{line}");
            assert!(parts[0].starts_with("vmq."), "{line}");
            let ts: u64 = parts[2].parse().unwrap();
            assert!(ts + 60 > now && ts < now + 60, "{line}");
            if parts[0] == "vmq.mqtt_publish_received" {
                let n: u64 = parts[1].parse().unwrap();
                if n >= 1 {
                    return n;
                }
            }
        }
    })
    .await
    .expect("Graphite gets the publish counter");
    assert!(received >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_deeper_than_topic_max_depth_are_refused() {
    let (_server, addr) = start_broker("topic_max_depth = 3\n").await;
    let (mut c, _) = v4_client(addr, "deep", true, |_| {}).await;
    c.client
        .subscribe("a/b/c/d", QoS::AtMostOnce)
        .await
        .unwrap();
    let suback = c.suback().await;
    assert_eq!(suback.return_codes, [rumqttc::SubscribeReasonCode::Failure]);
    c.client.subscribe("a/b/c", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        c.suback().await.return_codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    c.client
        .publish("a/b/c", QoS::AtMostOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(c.next_publish().await.topic, "a/b/c");
}
