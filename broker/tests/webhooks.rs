//! `vmq_webhooks` end to end: the `vmq-broker` binary configured as a VerneMQ user configures
//! it, a real HTTP server (axum, in the test) as the endpoint, and real MQTT clients
//! (mosquitto_pub/sub for MQTT 3.1.1 and 5, rumqttc). Each test checks the exact JSON the
//! endpoint receives, the `vernemq-hook` header, and the effect of each answer.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{Incoming, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use support::endpoint::{Endpoint, Reply, ok_reply};
use support::{
    WAIT, admin, b64, labelled, metric, mosquitto_pub, poll_until, run, text, v4_client,
    webhooks_broker as broker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_register_bodies_answers_and_refusal_codes_v3_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, _) = broker(
        dir.path(),
        "",
        &[
            ("auth_on_register", &ep.url),
            ("auth_on_register_m5", &ep.url),
            ("on_register", &ep.url),
            ("on_register_m5", &ep.url),
        ],
    );
    // ok: MQTT 3.1.1 connects, with VerneMQ's exact body and header.
    let o = mosquitto_pub(
        &port,
        &[
            "-V", "mqttv311", "-i", "c1", "-u", "user", "-P", "pass", "-t", "t", "-m", "x",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let call = &ep.wait_calls("auth_on_register", 1).await[0];
    assert_eq!(call.content_type, "application/json");
    let mut body = call.body.clone();
    let peer_port = body["peer_port"].take();
    assert!(peer_port.as_u64().is_some_and(|p| p > 0), "{peer_port}");
    assert_eq!(
        body,
        json!({"peer_addr":"127.0.0.1","peer_port":null,"mountpoint":"","client_id":"c1",
               "username":"user","password":"pass","clean_session":true})
    );
    // The field order is VerneMQ's.
    assert_eq!(
        call.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "peer_addr",
            "peer_port",
            "mountpoint",
            "client_id",
            "username",
            "password",
            "clean_session"
        ]
    );
    let reg = &ep.wait_calls("on_register", 1).await[0];
    assert_eq!(reg.body["client_id"], "c1");
    assert_eq!(reg.body["username"], "user");
    assert!(reg.body.get("password").is_none());

    // No credentials: null; an MQTT 5 client calls the _m5 hook, with its CONNECT properties.
    let o = mosquitto_pub(
        &port,
        &[
            "-V",
            "mqttv5",
            "-i",
            "c5",
            "-D",
            "connect",
            "session-expiry-interval",
            "5",
            "-D",
            "connect",
            "user-property",
            "k1",
            "v1",
            "-t",
            "t",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let call = &ep.wait_calls("auth_on_register_m5", 1).await[0];
    assert_eq!(call.body["username"], Value::Null);
    assert_eq!(call.body["password"], Value::Null);
    assert_eq!(call.body["clean_start"], json!(true));
    assert!(call.body.get("clean_session").is_none());
    assert_eq!(
        call.body["properties"]["p_session_expiry_interval"],
        json!(5)
    );
    assert_eq!(
        call.body["properties"]["p_user_property"],
        json!([{"key": b64("k1"), "val": b64("v1")}])
    );
    let reg5 = &ep.wait_calls("on_register_m5", 1).await[0];
    assert_eq!(
        reg5.body["properties"]["p_session_expiry_interval"],
        json!(5)
    );
    assert_eq!(
        ep.calls("auth_on_register").len(),
        1,
        "v5 does not call the v3 hook"
    );

    // error: refused, v3 with 5 (not authorized), v5 with 0x86.
    ep.answer(|_, _| Reply::Json(json!({"result": {"error": "not_allowed"}})));
    let o = mosquitto_pub(&port, &["-V", "mqttv311", "-i", "c2", "-t", "t", "-m", "x"]).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("not authorised"), "{}", text(&o));
    let o = mosquitto_pub(&port, &["-V", "mqttv5", "-i", "c6", "-t", "t", "-m", "x"]).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("Bad User Name or Password"),
        "{}",
        text(&o)
    );
    // next, and no other plugin decides: refused as VerneMQ does.
    ep.answer(|_, _| Reply::Json(json!({"result": "next"})));
    let o = mosquitto_pub(&port, &["-V", "mqttv311", "-i", "c3", "-t", "t", "-m", "x"]).await;
    assert!(text(&o).contains("not authorised"), "{}", text(&o));

    // ok with modifiers: the client is registered under the new client id (on_register sees
    // it), and an unknown modifier refuses.
    ep.answer(|hook, _| match hook {
        "auth_on_register" => Reply::Json(json!({"result":"ok","modifiers":
            {"mountpoint":"","client_id":"changed_client_id"}})),
        h => ok_reply(h, &Value::Null),
    });
    let o = mosquitto_pub(&port, &["-V", "mqttv311", "-i", "c4", "-t", "t", "-m", "x"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let regs = ep.wait_calls("on_register", 2).await;
    assert_eq!(regs[1].body["client_id"], "changed_client_id");
    ep.answer(|_, _| Reply::Json(json!({"result":"ok","modifiers":{"reg_view":"x"}})));
    let o = mosquitto_pub(&port, &["-V", "mqttv311", "-i", "c7", "-t", "t", "-m", "x"]).await;
    assert!(text(&o).contains("not authorised"), "{}", text(&o));
    let http = b.http_port().to_owned();
    // ok(2) + error + next + ok + bad modifier = 4 v3 calls counted as requests; 2 errors
    // (the endpoint's error and the bad modifier).
    assert_eq!(metric(&http, "webhooks_auth_on_register_requests").await, 5);
    assert_eq!(metric(&http, "webhooks_auth_on_register_errors").await, 2);
    assert!(metric(&http, "webhooks_auth_on_register_bytes_sent").await > 100);
    drop(b);
}

/// Subscribes with rumqttc and returns the SUBACK codes.
async fn subscribe(
    client: &rumqttc::AsyncClient,
    events: &mut rumqttc::EventLoop,
    topics: &[(&str, QoS)],
) -> Vec<SubscribeReasonCode> {
    client
        .subscribe_many(
            topics
                .iter()
                .map(|(t, q)| rumqttc::SubscribeFilter::new(t.to_string(), *q)),
        )
        .await
        .unwrap();
    let mut codes = Vec::new();
    poll_until(events, |p| match p {
        Incoming::SubAck(a) => {
            codes = a.return_codes.clone();
            true
        }
        _ => false,
    })
    .await;
    codes
}

/// Waits for the next PUBLISH; (topic, payload).
async fn next_publish(events: &mut rumqttc::EventLoop) -> (String, Bytes) {
    let mut got = None;
    poll_until(events, |p| match p {
        Incoming::Publish(p) => {
            got = Some((p.topic.clone(), p.payload.clone()));
            true
        }
        _ => false,
    })
    .await;
    got.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_deliver_and_unsubscribe_answers_change_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, _) = broker(
        dir.path(),
        "",
        &[
            ("auth_on_register", &ep.url),
            ("auth_on_subscribe", &ep.url),
            ("auth_on_publish", &ep.url),
            ("on_deliver", &ep.url),
            ("on_unsubscribe", &ep.url),
            ("on_publish", &ep.url),
            ("on_subscribe", &ep.url),
            ("on_client_wakeup", &ep.url),
            ("on_client_gone", &ep.url),
            ("on_client_offline", &ep.url),
            ("on_offline_message", &ep.url),
        ],
    );
    ep.answer(|hook, body| match hook {
        // One entry per asked topic: the first rewritten, the second refused.
        "auth_on_subscribe" if body["topics"].as_array().is_some_and(|t| t.len() == 2) => {
            Reply::Json(json!({"result":"ok","topics":[
                {"topic":"rewritten/topic","qos":1},{"topic":"forbidden/topic","qos":128}]}))
        }
        "auth_on_publish" if body["topic"] == "in/raw" => {
            Reply::Json(json!({"result":"ok","modifiers":{"topic":"rewritten/topic",
                "payload": b64("rewritten payload"),"qos":1}}))
        }
        "auth_on_publish" if body["topic"] == "in/refused" => {
            Reply::Json(json!({"result":{"error":"not_allowed"}}))
        }
        "on_deliver" if body["payload"] == b64("deliver me differently") => {
            Reply::Json(json!({"result":"ok","modifiers":{"payload": b64("changed on delivery")}}))
        }
        "on_unsubscribe" => Reply::Json(json!({"result":"ok","topics":["rewritten/topic"]})),
        h => ok_reply(h, body),
    });
    let (sub, mut sub_events) = v4_client("sub", &port, false);
    let codes = subscribe(
        &sub,
        &mut sub_events,
        &[
            ("asked/topic", QoS::AtLeastOnce),
            ("secret/topic", QoS::ExactlyOnce),
        ],
    )
    .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]
    );
    let call = &ep.wait_calls("auth_on_subscribe", 1).await[0];
    assert_eq!(
        call.body,
        json!({"username":null,"mountpoint":"","client_id":"sub",
               "topics":[{"topic":"asked/topic","qos":1},{"topic":"secret/topic","qos":2}]})
    );
    // on_subscribe lists what was subscribed: the rewritten topic only.
    let on_sub = &ep.wait_calls("on_subscribe", 1).await[0];
    assert_eq!(
        on_sub.body["topics"],
        json!([{"topic":"rewritten/topic","qos":1}])
    );

    // The publish is rewritten (topic, payload, qos) before routing.
    let (publisher, mut pub_events) = v4_client("pub", &port, true);
    publisher
        .publish("in/raw", QoS::AtMostOnce, false, "original")
        .await
        .unwrap();
    let (sub_task_topic, payload) = tokio::select! {
        got = next_publish(&mut sub_events) => got,
        _ = async { loop { pub_events.poll().await.unwrap(); } } => unreachable!(),
    };
    assert_eq!(sub_task_topic, "rewritten/topic");
    assert_eq!(&payload[..], b"rewritten payload");
    let call = &ep.wait_calls("auth_on_publish", 1).await[0];
    assert_eq!(
        call.body,
        json!({"username":null,"mountpoint":"","client_id":"pub","qos":0,"topic":"in/raw",
               "payload": b64("original"),"retain":false})
    );
    // on_publish sees the message as routed; on_deliver the subscriber and the message.
    let on_pub = &ep.wait_calls("on_publish", 1).await[0];
    assert_eq!(on_pub.body["topic"], "rewritten/topic");
    assert_eq!(on_pub.body["qos"], 1);
    let deliver = &ep.wait_calls("on_deliver", 1).await[0];
    assert_eq!(
        deliver.body,
        json!({"username":null,"mountpoint":"","client_id":"sub","qos":1,
               "topic":"rewritten/topic","payload": b64("rewritten payload"),"retain":false,
               "properties":{}})
    );

    // on_deliver rewrites what this subscriber gets.
    let o = mosquitto_pub(
        &port,
        &[
            "-V",
            "mqttv311",
            "-t",
            "rewritten/topic",
            "-m",
            "deliver me differently",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let (_, payload) = next_publish(&mut sub_events).await;
    assert_eq!(&payload[..], b"changed on delivery");

    // A refused publish from an MQTT 3 client is acknowledged and dropped (this broker's rule
    // for every auth plugin; VerneMQ closes a 3.1.1 connection instead), and counted.
    publisher
        .publish("in/refused", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    poll_until(&mut pub_events, |p| matches!(p, Incoming::PubAck(_))).await;
    assert_eq!(metric(b.http_port(), "mqtt_publish_auth_error").await, 1);

    // on_unsubscribe replaces the filters: unsubscribing "nothing/here" removes the
    // rewritten subscription.
    sub.unsubscribe("nothing/here").await.unwrap();
    poll_until(&mut sub_events, |p| matches!(p, Incoming::UnsubAck(_))).await;
    let unsub = &ep.wait_calls("on_unsubscribe", 1).await[0];
    assert_eq!(
        unsub.body,
        json!({"username":null,"mountpoint":"","client_id":"sub","topics":["nothing/here"]})
    );
    let o = mosquitto_pub(&port, &["-t", "rewritten/topic", "-m", "after", "-q", "1"]).await;
    assert!(o.status.success());
    let quiet = tokio::time::timeout(Duration::from_millis(500), next_publish(&mut sub_events));
    assert!(
        quiet.await.is_err(),
        "still subscribed after the rewritten unsubscribe"
    );

    // The persistent subscriber leaves: offline; a message for it: on_offline_message.
    sub.subscribe("rewritten/topic", QoS::AtLeastOnce)
        .await
        .unwrap();
    poll_until(&mut sub_events, |p| matches!(p, Incoming::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while sub_events.poll().await.is_ok() {}
    })
    .await;
    let off = &ep.wait_calls("on_client_offline", 1).await[0];
    assert_eq!(off.body, json!({"mountpoint":"","client_id":"sub"}));
    let o = mosquitto_pub(&port, &["-t", "rewritten/topic", "-m", "queued", "-q", "1"]).await;
    assert!(o.status.success());
    let offline = &ep.wait_calls("on_offline_message", 1).await[0];
    assert_eq!(
        offline.body,
        json!({"mountpoint":"","client_id":"sub","qos":1,"topic":"rewritten/topic",
               "payload": b64("queued"),"retain":false})
    );
    let gone = ep.wait_calls("on_client_gone", 1).await;
    assert!(gone.iter().all(|c| c.body.get("client_id").is_some()));
    assert!(!ep.wait_calls("on_client_wakeup", 2).await.is_empty());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_refusals_per_topic_and_per_publish() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, _) = broker(
        dir.path(),
        "allow_anonymous = on\n",
        &[
            ("auth_on_subscribe_m5", &ep.url),
            ("auth_on_publish_m5", &ep.url),
            ("on_subscribe_m5", &ep.url),
        ],
    );
    ep.answer(|hook, body| match hook {
        "auth_on_subscribe_m5" => Reply::Json(json!({"result":"ok","modifiers":{"topics":[
            {"topic":"forbidden/topic","qos":135}]}})),
        "auth_on_publish_m5" if body["topic"] == "no/entry" => {
            Reply::Json(json!({"result":{"error":"not_allowed"}}))
        }
        h => ok_reply(h, body),
    });
    // allow_anonymous = on: auth_on_register is not asked (none is registered anyway).
    let o = run(
        "mosquitto_sub",
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
            "-V".into(),
            "mqttv5".into(),
            "-t".into(),
            "a/b".into(),
            "-D".into(),
            "subscribe".into(),
            "user-property".into(),
            "k".into(),
            "v".into(),
            "-C".into(),
            "1".into(),
            "-W".into(),
            "5".into(),
        ],
    )
    .await;
    assert!(text(&o).contains("denied"), "{}", text(&o));
    let call = &ep.wait_calls("auth_on_subscribe_m5", 1).await[0];
    assert_eq!(
        call.body["topics"],
        json!([{"topic":"a/b","qos":0,"no_local":false,"rap":false,"retain_handling":"send_retain"}])
    );
    assert_eq!(
        call.body["properties"]["p_user_property"],
        json!([{"key": b64("k"), "val": b64("v")}])
    );
    assert!(
        ep.calls("on_subscribe_m5").is_empty(),
        "nothing was subscribed"
    );
    let o = mosquitto_pub(
        &port,
        &["-V", "mqttv5", "-t", "no/entry", "-m", "x", "-q", "1"],
    )
    .await;
    assert!(text(&o).contains("Not authorized"), "{}", text(&o));
    let call = &ep.wait_calls("auth_on_publish_m5", 1).await[0];
    assert_eq!(call.body["properties"], json!({}));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_skip_the_endpoint_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, conf) = broker(dir.path(), "", &[("auth_on_register", &ep.url)]);
    ep.answer(|_, _| Reply::Cached(json!({"result":"ok"}), 1));
    let connect = |password: &'static str| {
        let port = port.clone();
        async move {
            let o = mosquitto_pub(
                &port,
                &[
                    "-i", "cached", "-u", "u", "-P", password, "-t", "t", "-m", "x",
                ],
            )
            .await;
            assert!(o.status.success(), "{}", text(&o));
        }
    };
    connect("secret").await;
    connect("secret").await;
    assert_eq!(
        ep.calls("auth_on_register").len(),
        1,
        "the second CONNECT was cached"
    );
    connect("other").await;
    assert_eq!(
        ep.calls("auth_on_register").len(),
        2,
        "another password is another key"
    );
    let out = admin(&conf, b.http_port(), &["webhooks", "cache", "show"]).await;
    let shown = text(&out);
    assert!(shown.contains("hits") && shown.contains(&ep.url), "{shown}");
    let http = b.http_port().to_owned();
    assert_eq!(metric(&http, "webhooks_cache_hits").await, 1);
    assert_eq!(metric(&http, "webhooks_cache_misses").await, 2);
    assert_eq!(metric(&http, "webhooks_cache_entries").await, 2);
    // max-age=1 in whole seconds: gone two seconds later.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    connect("secret").await;
    assert_eq!(ep.calls("auth_on_register").len(), 3, "expired");
    // Only ok answers are cached.
    ep.answer(|_, _| Reply::Cached(json!({"result":{"error":"no"}}), 60));
    for _ in 0..2 {
        let o = mosquitto_pub(
            &port,
            &["-i", "e", "-u", "x", "-P", "y", "-t", "t", "-m", "x"],
        )
        .await;
        assert!(!o.status.success());
    }
    assert_eq!(ep.calls("auth_on_register").len(), 5);
    let out = admin(&conf, b.http_port(), &["webhooks", "cache", "clear"]).await;
    assert!(text(&out).contains("Done"), "{}", text(&out));
    assert_eq!(metric(&http, "webhooks_cache_entries").await, 0);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_refuse_count_and_log_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    // A port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}/down", l.local_addr().unwrap().port())
    };
    let (b, port, conf) = broker(
        dir.path(),
        "vmq_webhooks.wh00.response_timeout = 300\nlistener.tcp.open = 127.0.0.1:0\n\
         listener.tcp.open.allow_anonymous_override = on\n",
        &[
            ("auth_on_register", &ep.url),
            ("on_register", &ep.url),
            ("on_publish", &ep.url),
        ],
    );
    let open_port = b.mqtt_ports()[1].clone();
    // A client on the anonymous listener, served throughout.
    let (watcher, mut watch_events) = v4_client("watcher", &open_port, true);
    watcher.subscribe("still/#", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut watch_events, |p| matches!(p, Incoming::SubAck(_))).await;

    let cases: [(&str, Reply); 3] = [
        ("500", Reply::Status(500)),
        ("garbage", Reply::Garbage),
        ("hang", Reply::Hang),
    ];
    for (name, reply) in cases {
        ep.answer(move |_, _| reply.clone());
        let o = mosquitto_pub(&port, &["-i", name, "-t", "t", "-m", "x"]).await;
        assert!(text(&o).contains("not authorised"), "{name}: {}", text(&o));
        let o = mosquitto_pub(&open_port, &["-i", "w", "-t", "still/here", "-m", name]).await;
        assert!(o.status.success());
        let (_, payload) = next_publish(&mut watch_events).await;
        assert_eq!(&payload[..], name.as_bytes());
    }
    let http = b.http_port().to_owned();
    assert_eq!(metric(&http, "webhooks_auth_on_register_errors").await, 3);
    assert_eq!(metric(&http, "webhooks_auth_on_register_timeouts").await, 1);
    // The endpoint goes away: registered at run time, refused the same way.
    let out = admin(
        &conf,
        &http,
        &[
            "webhooks",
            "deregister",
            "hook=auth_on_register",
            &format!("endpoint={}", ep.url),
        ],
    )
    .await;
    assert!(text(&out).contains("Done"), "{}", text(&out));
    let out = admin(
        &conf,
        &http,
        &[
            "webhooks",
            "register",
            "hook=auth_on_register",
            &format!("endpoint={down}"),
        ],
    )
    .await;
    assert!(text(&out).contains("Done"), "{}", text(&out));
    let o = mosquitto_pub(&port, &["-i", "down", "-t", "t", "-m", "x"]).await;
    assert!(text(&o).contains("not authorised"), "{}", text(&o));
    assert_eq!(metric(&http, "webhooks_auth_on_register_errors").await, 4);
    let logs = b.logs();
    let start = Instant::now();
    loop {
        let l = logs.lock().unwrap().join("\n");
        if [
            "invalid_response_code 500",
            "received_payload_not_json",
            "timeout",
            "econnrefused",
        ]
        .iter()
        .all(|w| l.contains(w))
            && l.contains(&down)
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "the log does not say why:\n{l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_notification_endpoint_never_delays_connack_or_puback() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Endpoint::start().await;
    slow.answer(|_, _| Reply::Hang);
    let (b, port, _) = broker(
        dir.path(),
        "allow_anonymous = on\nvmq_webhooks.wh00.response_timeout = 30000\n\
         vmq_webhooks.wh01.response_timeout = 30000\nvmq_webhooks.queue_size = 8\n",
        &[("on_register", &slow.url), ("on_publish", &slow.url)],
    );
    let (c, mut events) = v4_client("fast", &port, true);
    let started = Instant::now();
    poll_until(&mut events, |p| matches!(p, Incoming::ConnAck(_))).await;
    for i in 0..20 {
        c.publish("t", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
        poll_until(&mut events, |p| matches!(p, Incoming::PubAck(_))).await;
    }
    // The endpoint holds every call for 30 s; CONNACK and 20 PUBACKs came anyway.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    slow.wait_calls("on_register", 1).await;
    // The client's on_publish calls wait behind its on_register (one client's notifications
    // reach the endpoint in order), in the endpoint's queue, not in the session.
    let http = b.http_port().to_owned();
    // The on_register being sent, and as many on_publish as the client's queue holds (8 over
    // 4 queues: 2); the others were dropped, and counted.
    assert_eq!(metric(&http, "webhooks_notifications_queued").await, 3);
    let dropped = labelled(&http, "webhooks_notifications_dropped", &["queue_full"]).await;
    assert_eq!(dropped, 18);
    assert!(slow.calls("on_publish").is_empty());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmq_admin_registers_shows_and_deregisters() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, conf) = broker(dir.path(), "", &[]);
    let http = b.http_port().to_owned();
    // Nothing registered: nobody decides, refused.
    let o = mosquitto_pub(&port, &["-i", "a", "-t", "t", "-m", "x"]).await;
    assert!(text(&o).contains("not authorised"), "{}", text(&o));
    let endpoint = format!("endpoint={}", ep.url);
    let out = admin(
        &conf,
        &http,
        &[
            "webhooks",
            "register",
            "hook=auth_on_register",
            &endpoint,
            "--base64payload=false",
        ],
    )
    .await;
    assert!(text(&out).contains("Done"), "{}", text(&out));
    let o = mosquitto_pub(&port, &["-i", "a", "-t", "t", "-m", "x"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let out = admin(&conf, &http, &["webhooks", "show"]).await;
    let shown = text(&out);
    for column in ["hook", "endpoint", "base64payload", "response_timeout"] {
        assert!(shown.contains(column), "{shown}");
    }
    assert!(
        shown.contains("auth_on_register") && shown.contains(&ep.url),
        "{shown}"
    );
    assert!(shown.contains("false") && shown.contains("5000"), "{shown}");
    let out = admin(
        &conf,
        &http,
        &["webhooks", "register", "hook=auth_on_register", &endpoint],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("already_registered"), "{}", text(&out));
    let out = admin(
        &conf,
        &http,
        &["webhooks", "register", "hook=on_nothing", &endpoint],
    )
    .await;
    assert!(text(&out).contains("unknown hook"), "{}", text(&out));
    let out = admin(
        &conf,
        &http,
        &["webhooks", "deregister", "hook=auth_on_register", &endpoint],
    )
    .await;
    assert!(text(&out).contains("Done"), "{}", text(&out));
    let out = admin(
        &conf,
        &http,
        &["webhooks", "deregister", "hook=auth_on_register", &endpoint],
    )
    .await;
    assert!(text(&out).contains("not_found"), "{}", text(&out));
    let o = mosquitto_pub(&port, &["-i", "a", "-t", "t", "-m", "x"]).await;
    assert!(text(&o).contains("not authorised"), "{}", text(&o));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publish_deliver_unsubscribe_bodies_and_session_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let (b, port, _) = broker(
        dir.path(),
        "allow_anonymous = on\n",
        &[
            ("on_publish_m5", &ep.url),
            ("on_deliver_m5", &ep.url),
            ("on_unsubscribe_m5", &ep.url),
            ("on_session_expired", &ep.url),
        ],
    );
    ep.answer(|hook, body| match hook {
        "on_deliver_m5" => Reply::Json(json!({"result":"ok","modifiers":{
            "payload": b64("delivered"),
            "properties": {"p_content_type": "text/x-changed"}}})),
        h => ok_reply(h, body),
    });
    // A v5 subscriber that unsubscribes after its first message.
    let sub = {
        let port = port.clone();
        tokio::spawn(async move {
            run(
                "mosquitto_sub",
                [
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    "mqttv5",
                    "-i",
                    "s5",
                    "-t",
                    "t/5",
                    "-C",
                    "1",
                    "-W",
                    "10",
                    "-F",
                    "%p|%P",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = mosquitto_pub(
        &port,
        &[
            "-V",
            "mqttv5",
            "-i",
            "p5",
            "-t",
            "t/5",
            "-m",
            "sent",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let got = text(&sub.await.unwrap());
    assert!(got.contains("delivered"), "{got}");
    let on_pub = &ep.wait_calls("on_publish_m5", 1).await[0];
    assert_eq!(
        on_pub.body,
        json!({"username":null,"mountpoint":"","client_id":"p5","qos":0,"topic":"t/5",
               "payload": b64("sent"),"retain":false,
               "properties":{"p_content_type":"text/plain"}})
    );
    let deliver = &ep.wait_calls("on_deliver_m5", 1).await[0];
    assert_eq!(deliver.body["client_id"], "s5");
    assert_eq!(
        deliver.body["properties"],
        json!({"p_content_type":"text/plain"})
    );

    // on_unsubscribe_m5 from a v5 client's UNSUBSCRIBE.
    let o = run(
        "mosquitto_sub",
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-i",
            "u5",
            "-t",
            "x/y",
            "-U",
            "x/y",
            "-W",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let _ = o;
    let unsub = &ep.wait_calls("on_unsubscribe_m5", 1).await[0];
    assert_eq!(
        unsub.body,
        json!({"username":null,"mountpoint":"","client_id":"u5","topics":["x/y"],"properties":{}})
    );

    // A v5 session with a 1 s expiry: on_session_expired once it is gone.
    let o = mosquitto_pub(
        &port,
        &[
            "-V", "mqttv5", "-i", "expiring", "-c", "-x", "1", "-t", "t", "-m", "x",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let expired = &ep.wait_calls("on_session_expired", 1).await[0];
    assert_eq!(
        expired.body,
        json!({"mountpoint":"","client_id":"expiring"})
    );
    drop(b);
}
