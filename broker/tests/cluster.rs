//! A cluster as an operator runs one: three `vmq-broker` processes on 127.0.0.1, 127.0.0.2 and
//! 127.0.0.3 (the same cluster port on each, as VerneMQ nodes share theirs), joined with
//! `vmq-admin cluster join`, driven by rumqttc and mosquitto clients.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::{Event, Packet, QoS};
use support::cluster::*;

/// Three brokers per test on two cores: the tests of this file run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_deliver_take_over_retain_survive_a_kill_and_leave() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = shared_port();
    let (seen1, relay1) = sidecar().await;
    let (seen2, relay2) = sidecar().await;
    let mut n1 = Node::start(dir.path(), 1, port, &relay1);
    let n2 = Node::start(dir.path(), 2, port, &relay2);
    let mut n3 = Node::start(dir.path(), 3, port, "");

    // Before joining, a node is alone.
    assert_eq!(n1.show().len(), 1);
    // n2 joins n1 by name, n3 joins n2 by address: gossip tells everyone about everyone.
    let out = n2.admin(&["cluster", "join", "discovery-node=n1@127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let out = n3.admin(&[
        "cluster",
        "join",
        &format!("discovery-node=127.0.0.2:{port}"),
    ]);
    assert!(out.status.success(), "{out:?}");
    // A wrong name for the address is refused.
    let out = n3.admin(&["cluster", "join", "discovery-node=n9@127.0.0.1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is \"n1@127.0.0.1\", not"));
    eventually("three nodes see each other", || converged(&[&n1, &n2, &n3]));

    // A node with another cookie cannot join.
    let n4 = Node::start(dir.path(), 4, port, "distributed_cookie = not-vmq\n");
    let out = n4.admin(&["cluster", "join", "discovery-node=n1@127.0.0.1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("distributed_cookie"), "{err}");
    assert_eq!(n4.show().len(), 1);
    drop(n4);

    // Cross-node delivery: subscribers on n1 and n3, 1,000 QoS 1 messages published on n2,
    // each subscriber gets each exactly once, in order.
    let (_s1, mut ev1) = subscriber("sub-n1", &n1, "t/#").await;
    let (_s3, mut ev3) = subscriber("sub-n3", &n3, "t/+").await;
    eventually("n2 knows n1's and n3's routes", || {
        n2.column(&n1.name, "Routes").as_deref() == Some("1")
            && n2.column(&n3.name, "Routes").as_deref() == Some("1")
    });
    let payloads: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let (got1, got3, ()) = tokio::join!(
        receive(&mut ev1, 1000),
        receive(&mut ev3, 1000),
        publish_all(&n2, "pub-n2", "t/x", &payloads)
    );
    assert_eq!(got1, payloads, "n1's subscriber: all, once, in order");
    assert_eq!(got3, payloads, "n3's subscriber: all, once, in order");
    assert!(n1.metric("cluster_messages_received", "") >= 1000);
    // Each node relays the hooks that ran on it, to its own sidecar, naming itself: the
    // publishes on n2's, the deliveries to n1's subscriber on n1's.
    eventually("the sidecars got the events", || {
        count(&seen2, "on_publish", "pub-n2") == 1000
            && count(&seen1, "on_deliver", "sub-n1") == 1000
    });
    assert_eq!(count(&seen1, "on_publish", "pub-n2"), 0);
    assert_eq!(count(&seen2, "on_deliver", "sub-n1"), 0);
    assert!(
        seen1
            .lock()
            .unwrap()
            .iter()
            .all(|(_, node, _)| node == "n1@127.0.0.1")
    );
    assert!(
        seen2
            .lock()
            .unwrap()
            .iter()
            .all(|(_, node, _)| node == "n2@127.0.0.2")
    );

    // Offline takeover: X (persistent) subscribes on n1 and goes; ten messages published on
    // n2 are queued for it on n1; X comes back on n3 and gets them all, in order.
    let before = routes(&n2, &n1);
    let (x, mut evx, present) = connect("X", &n1, false).await;
    assert!(!present);
    x.subscribe("o/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = evx.poll().await.unwrap() {
            break;
        }
    }
    eventually("n2 knows X's route on n1", || {
        routes(&n2, &n1) == before + 1
    });
    let x_session = n1.session_id("X").expect("X's session on n1");
    x.disconnect().await.unwrap();
    while evx.poll().await.is_ok() {}
    let ten: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    publish_all(&n2, "pub-o", "o/t", &ten).await;
    // Queued on n1, where X's session is: n1's sidecar hears of each.
    eventually("n1's sidecar got X's offline messages", || {
        count(&seen1, "on_offline_message", "X") == 10
    });
    assert_eq!(count(&seen2, "on_offline_message", "X"), 0);
    let (_x3, mut evx3, present) = connect("X", &n3, false).await;
    assert!(present, "the session moved from n1 to n3");
    assert_eq!(
        n3.session_id("X").as_deref(),
        Some(x_session.as_str()),
        "its session id moved with it"
    );
    assert_eq!(receive(&mut evx3, 10).await, ten);
    assert_eq!(n3.metric("cluster_sessions_taken_over", ""), 1);
    assert_eq!(n1.metric("cluster_sessions_handed_over", ""), 1);
    eventually("X's route moved from n1 to n3", || {
        routes(&n2, &n1) == before && routes(&n2, &n3) == 2
    });

    // Live takeover: L is connected to n1 (MQTT 5); L connecting to n3 closes the first
    // connection with 0x8E (session taken over), and only the new one gets what follows.
    let before = routes(&n2, &n1);
    let first = Command::new("mosquitto_sub")
        .args([
            "-h", &n1.ip, "-p", &n1.mqtt, "-i", "L", "-V", "mqttv5", "-c",
        ])
        .args(["-x", "600", "-q", "1", "-t", "l/#", "-d", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("n2 knows L's route on n1", || {
        routes(&n2, &n1) == before + 1
    });
    let (_l3, mut evl3, present) = connect("L", &n3, false).await;
    assert!(present);
    let started = Instant::now();
    let out = first.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the first connection was closed"
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("Received DISCONNECT (142)"), "{said}");
    eventually("L's route moved", || routes(&n2, &n1) == before);
    publish_all(&n2, "pub-l", "l/1", &["live".to_owned()]).await;
    assert_eq!(receive(&mut evl3, 2).await, vec!["live".to_owned()]);

    // A share group with a member on n1 and one on n2; 1,000 messages published on n3 (where
    // the group has no member) reach the group exactly once in total, spread over both.
    let (_g1, mut evg1) = subscriber("g-n1", &n1, "$share/g/s/#").await;
    let (_g2, mut evg2) = subscriber("g-n2", &n2, "$share/g/s/#").await;
    eventually("n3 knows both members' nodes", || {
        let shown = |n: &Node| {
            n3.column(&n.name, "Routes")
                .and_then(|r| r.parse::<usize>().ok())
        };
        shown(&n1) >= Some(2) && shown(&n2) >= Some(1)
    });
    let (s1, s2, ()) = tokio::join!(
        receive(&mut evg1, 1000),
        receive(&mut evg2, 1000),
        publish_all(&n3, "pub-g", "s/1", &payloads)
    );
    let mut all: Vec<String> = s1.iter().chain(&s2).cloned().collect();
    all.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(all, expected, "each message once, to one member");
    assert!(
        !s1.is_empty() && !s2.is_empty(),
        "{} and {}",
        s1.len(),
        s2.len()
    );
    // Published on n1, where the group has a member: prefer_local keeps them there.
    let few: Vec<String> = (0..20).map(|i| format!("local{i}")).collect();
    let (l1, l2, ()) = tokio::join!(
        receive(&mut evg1, 20),
        receive(&mut evg2, 1),
        publish_all(&n1, "pub-g1", "s/2", &few)
    );
    assert_eq!(l1, few);
    assert!(l2.is_empty());

    // Retained: set on n1, seen by a new subscriber on n3; cleared from n2, gone on n3.
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "r/1", "-m", "kept", "-r", "-q", "1"],
    );
    assert!(out.status.success());
    eventually("n3 has n1's retained message", || {
        let o = mosquitto(
            "mosquitto_sub",
            &n3,
            &["-t", "r/#", "-C", "1", "-W", "1", "-v"],
        );
        String::from_utf8_lossy(&o.stdout).trim() == "r/1 kept"
    });
    let out = mosquitto("mosquitto_pub", &n2, &["-t", "r/1", "-n", "-r", "-q", "1"]);
    assert!(out.status.success());
    eventually("the retained message is cleared on n3", || {
        let o = mosquitto(
            "mosquitto_sub",
            &n3,
            &["-t", "r/#", "-C", "1", "-W", "1", "-v"],
        );
        o.stdout.is_empty()
    });

    // SIGKILL n3 while n1 publishes to subscribers on n2 and n3: n1 and n2 keep serving, n1
    // sees n3 down, what n1 could not hand to n3 is queued up to the bound and the rest
    // counted as dropped.
    let (_s2, mut ev2) = subscriber("sub-n2", &n2, "k/#").await;
    let (_s3k, mut ev3k) = subscriber("sub-n3-k", &n3, "k/#").await;
    until_routed(&n1, "k/probe", &mut [&mut ev2, &mut ev3k]).await;
    n3.kill();
    let big: Vec<String> = (0..1000).map(|i| format!("{i:0>1500}")).collect();
    let (got2, ()) = tokio::join!(
        receive(&mut ev2, 1000),
        publish_all(&n1, "pub-n1", "k/x", &big)
    );
    assert_eq!(got2.len(), 1000, "n2 got everything while n3 was dead");
    eventually("n1 sees n3 down", || {
        n1.column(&n3.name, "Running").as_deref() == Some("false")
    });
    let dropped = n1.metric("cluster_bytes_dropped", "peer=\"n3@127.0.0.3\"");
    let queued = n1.metric("cluster_bytes_queued", "peer=\"n3@127.0.0.3\"");
    assert!(
        dropped > 0,
        "a 1 MB buffer cannot hold 1.5 MB for a dead node"
    );
    assert!(queued <= 1 << 20, "{queued}");
    // n1 and n2 still take new clients and deliver between them.
    let (_s2b, mut ev2b) = subscriber("sub-n2-b", &n2, "alive/#").await;
    until_routed(&n1, "alive/probe", &mut [&mut ev2b]).await;
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "alive/1", "-m", "yes", "-q", "1"],
    );
    assert!(out.status.success());
    assert_eq!(receive(&mut ev2b, 1).await, vec!["yes".to_owned()]);

    // n3 restarted on its data dir rejoins by itself and gets publishes from n1 again.
    n3.restart();
    eventually("n3 rejoined", || converged(&[&n1, &n2, &n3]));
    // Its persistent sessions (X's and L's) came back from its store with their routes; the
    // clean sessions' routes are gone.
    eventually("n3's restored routes", || routes(&n1, &n3) == 2);
    let (_s3b, mut ev3b) = subscriber("sub-n3-b", &n3, "back/#").await;
    eventually("n1 knows n3's new route", || routes(&n1, &n3) == 3);
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "back/1", "-m", "again", "-q", "1"],
    );
    assert!(out.status.success());
    assert_eq!(receive(&mut ev3b, 1).await, vec!["again".to_owned()]);

    // cluster leave, run on n1 for n3: everyone forgets n3, and n3 stops gossiping.
    let out = n1.admin(&["cluster", "leave", "node=n3@127.0.0.3"]);
    assert!(out.status.success(), "{out:?}");
    eventually("n2 forgot n3", || n2.column(&n3.name, "Node").is_none());
    eventually("n3 left", || {
        n3.column(&n3.name, "Gossip").as_deref() == Some("off") && n3.show().len() == 1
    });
    assert!(n1.column(&n3.name, "Node").is_none());
    // n3 is a single node again: what is published on n1 no longer reaches it.
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "back/2", "-m", "gone", "-q", "1"],
    );
    assert!(out.status.success());
    assert!(receive(&mut ev3b, 1).await.is_empty());
    n1.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_refuses_as_configured_and_the_split_heals() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = shared_port();
    let inject = "cluster.fault_injection = on\n";
    let n1 = Node::start(dir.path(), 1, port, inject);
    let mut n2 = Node::start(dir.path(), 2, port, inject);
    let mut n3 = Node::start(dir.path(), 3, port, inject);
    // A retained message set on n1 before the others join reaches them when they join.
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "r/old", "-m", "early", "-r", "-q", "1"],
    );
    assert!(out.status.success());
    for n in [&n2, &n3] {
        let out = n.admin(&["cluster", "join", "discovery-node=n1@127.0.0.1"]);
        assert!(out.status.success(), "{out:?}");
    }
    eventually("three nodes see each other", || converged(&[&n1, &n2, &n3]));
    eventually("n3 has the retained message from before it joined", || {
        let o = mosquitto(
            "mosquitto_sub",
            &n3,
            &["-t", "r/#", "-C", "1", "-W", "1", "-v"],
        );
        String::from_utf8_lossy(&o.stdout).trim() == "r/old early"
    });
    assert_eq!(health(&n3), (200, true));

    // A client on n3 from before the split, subscribed to p/#.
    let (c3, mut ev3) = subscriber("before", &n3, "p/#").await;
    let (_c1, mut ev1) = subscriber("probe-n1", &n1, "p/#").await;
    until_routed(&n1, "p/probe", &mut [&mut ev3, &mut ev1]).await;

    // The split: n3 alone, n1 and n2 together.
    partition(&n3, &[&n1, &n2]);
    eventually("n3 knows it is cut off", || health(&n3) == (503, false));
    assert_eq!(health(&n1), (200, true), "two of three is a majority");
    // allow_*_during_netsplit are off: n3 refuses new clients (v3 CONNACK 3, v5 0x88) ...
    let out = mosquitto("mosquitto_pub", &n3, &["-t", "x", "-m", "x", "-q", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unavailable"),
        "{out:?}"
    );
    let out = mosquitto(
        "mosquitto_pub",
        &n3,
        &["-V", "mqttv5", "-t", "x", "-m", "x", "-q", "1", "-d"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CONNACK (136)"),
        "{out:?}"
    );
    // ... and its connected client's SUBSCRIBE.
    c3.subscribe("q/#", QoS::AtLeastOnce).await.unwrap();
    let refused = loop {
        if let Event::Incoming(Packet::SubAck(a)) = ev3.poll().await.unwrap() {
            break a;
        }
    };
    assert_eq!(
        refused.return_codes,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    // The majority keeps full service: a new client on n2 subscribes, n1 publishes to it.
    let (_c2, mut ev2) = subscriber("during", &n2, "split/#").await;
    until_routed(&n1, "split/probe", &mut [&mut ev2]).await;
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "split/1", "-m", "majority", "-q", "1"],
    );
    assert!(out.status.success());
    assert_eq!(receive(&mut ev2, 1).await, vec!["majority".to_owned()]);
    // What n1 publishes for n3's subscriber during the split waits in n1's buffer for n3.
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "p/1", "-m", "held", "-q", "1"],
    );
    assert!(out.status.success());
    receive(&mut ev1, 1).await;

    // The heal: n3 is in quorum again, gets what was held for it, knows the subscription
    // made during the split, and takes new clients.
    heal(&[&n1, &n2, &n3]);
    eventually("n3 back in quorum", || health(&n3) == (200, true));
    assert_eq!(receive(&mut ev3, 1).await, vec!["held".to_owned()]);
    let out = mosquitto(
        "mosquitto_pub",
        &n3,
        &["-t", "split/2", "-m", "healed", "-q", "1"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(receive(&mut ev2, 1).await, vec!["healed".to_owned()]);
    drop(c3);

    // Now with allow_register_during_netsplit and allow_subscribe_during_netsplit on: cut
    // off, n3 takes a new client and its subscription; after the heal it receives from n1.
    n3.kill();
    std::fs::write(
        &n3.conf,
        std::fs::read_to_string(&n3.conf).unwrap()
            + "allow_register_during_netsplit = on\nallow_subscribe_during_netsplit = on\n",
    )
    .unwrap();
    n3.restart();
    eventually("n3 rejoined", || converged(&[&n1, &n2, &n3]));
    partition(&n3, &[&n1, &n2]);
    eventually("n3 knows it is cut off", || health(&n3) == (503, false));
    let (_c3, mut ev3) = subscriber("cut-off", &n3, "late/#").await;
    // One client id connected on both sides: first on n1, then on n3.
    let older = Command::new("mosquitto_sub")
        .args(["-h", &n1.ip, "-p", &n1.mqtt, "-i", "dup", "-V", "mqttv5"])
        .args(["-q", "1", "-t", "dup/#", "-d", "-W", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_dup, mut evdup) = subscriber("dup", &n3, "dup/#").await;
    heal(&[&n1, &n2, &n3]);
    eventually("n3 back in quorum", || health(&n3) == (200, true));
    // After the heal one connection stays: the newer one, on n3.
    let out = older.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("Received DISCONNECT (142)"), "{said}");
    assert_eq!(n1.metric("cluster_duplicates_closed", ""), 1);
    until_routed(&n1, "late/probe", &mut [&mut ev3]).await;
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "late/1", "-m", "after", "-q", "1"],
    );
    assert!(out.status.success());
    assert_eq!(receive(&mut ev3, 1).await, vec!["after".to_owned()]);
    until_routed(&n1, "dup/probe", &mut [&mut evdup]).await;
    let out = mosquitto(
        "mosquitto_pub",
        &n1,
        &["-t", "dup/1", "-m", "kept", "-q", "1"],
    );
    assert!(out.status.success());
    assert_eq!(receive(&mut evdup, 1).await, vec!["kept".to_owned()]);
    assert!(
        n3.metric("netsplit_refused", "") == 0,
        "nothing refused with the flags on"
    );

    // A share group with members on n1 and n2; n2 dies; what n3 publishes before it knows
    // (some of it picked for n2's member) reaches the group all the same, through n1's member.
    let (_g1, mut evg1) = subscriber("h-n1", &n1, "$share/h/g/#").await;
    let (_g2, mut evg2) = subscriber("h-n2", &n2, "$share/h/g/#").await;
    let shown = |n: &Node| routes(&n3, n);
    eventually("n3 knows both members", || {
        shown(&n1) >= 1 && shown(&n2) >= 1
    });
    until_routed(&n3, "g/probe", &mut [&mut evg1]).await;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), evg2.poll()).await {}
    n2.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hundred: Vec<String> = (0..100).map(|i| format!("h{i}")).collect();
    publish_all(&n3, "pub-h", "g/1", &hundred).await;
    eventually("n3 sees n2 dead", || {
        n3.column(&n2.name, "Running").as_deref() == Some("false")
    });
    let mut got = receive(&mut evg1, 100).await;
    got.sort();
    let mut expected = hundred.clone();
    expected.sort();
    assert_eq!(got, expected, "every message to the group, once");
    assert!(n3.metric("cluster_shared_rerouted", "") > 0);
}
