//! Authentication and authorization as a deployment uses them: the `vmq-broker` binary with
//! `vmq_passwd` (file made by the `vmq-passwd` binary) and `vmq_acl` on, anonymous access off,
//! rumqttc clients in MQTT 3.1.1 and 5, and a sidecar built on the SDK watching the events.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use support::{WAIT, start_broker, terminate, wait_with_timeout};
use tokio::time::timeout;
use vmq_sidecar_sdk::Event as SidecarEvent;
use vmq_sidecar_sdk::proto::v1 as pb;

fn vmq_passwd(args: &[&Path], user: &str, password: &str, flags: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmq-passwd"))
        .args(flags)
        .args(args)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ACL: &str = "\
# everyone, anonymous included, may read public/#
topic read public/#
user alice
label telemetry
topic telemetry/+/data
label
topic write alice/#
user bob
topic bob/#
";

async fn next_event(events: &mut vmq_sidecar_sdk::EventStream) -> SidecarEvent {
    timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("sidecar running")
}

mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions};

    pub fn client(id: &str, port: &str, creds: Option<(&str, &str)>) -> (AsyncClient, EventLoop) {
        let mut o = MqttOptions::new(id, "127.0.0.1", port.parse().unwrap());
        o.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        AsyncClient::new(o, 100)
    }

    /// The CONNACK refusal of a client, or a panic if it was accepted.
    pub async fn refused(mut l: EventLoop) -> rumqttc::ConnectReturnCode {
        match timeout(WAIT, l.poll()).await.expect("answer") {
            Err(ConnectionError::ConnectionRefused(code)) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub async fn until(l: &mut EventLoop, mut f: impl FnMut(&Incoming) -> bool) {
        timeout(WAIT, async {
            loop {
                match l.poll().await {
                    Ok(Event::Incoming(p)) if f(&p) => return,
                    Ok(_) => {}
                    Err(e) => panic!("client error: {e}"),
                }
            }
        })
        .await
        .expect("in time")
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub fn client(id: &str, port: &str, creds: (&str, &str)) -> (AsyncClient, EventLoop) {
        let mut o = MqttOptions::new(id, "127.0.0.1", port.parse().unwrap());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_credentials(creds.0, creds.1);
        AsyncClient::new(o, 100)
    }

    pub async fn next(l: &mut EventLoop, mut f: impl FnMut(&Packet) -> bool) -> Packet {
        timeout(WAIT, async {
            loop {
                match l.poll().await {
                    Ok(Event::Incoming(p)) if f(&p) => return p,
                    Ok(_) => {}
                    Err(e) => panic!("client error: {e}"),
                }
            }
        })
        .await
        .expect("in time")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_acls_refuse_and_allow_as_configured() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode};
    use rumqttc::{ConnectReturnCode, Incoming, QoS};

    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let mut events = sidecar.into_stream(1024);
    let sidecar_port = events.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("vmq.passwd");
    let acl = dir.path().join("vmq.acl");
    vmq_passwd(&[&passwd], "alice", "secret", &["-c"]);
    vmq_passwd(&[&passwd], "bob", "bobpw", &[]);
    std::fs::write(&acl, ACL).unwrap();
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = off\nmessage_store = off\n\
             plugins.vmq_passwd = on\nvmq_passwd.password_file = {}\nvmq_passwd.password_reload_interval = 1\n\
             plugins.vmq_acl = on\nvmq_acl.acl_file = {}\nvmq_acl.acl_reload_interval = 1\n\
             plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {sidecar_port}\n\
             vmq_events_sidecar.hooks = on_register_failed,on_publish,on_subscribe\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let (broker, port) = start_broker(&conf);

    // Refusals, each with its CONNACK code and an OnRegisterFailed event.
    let cases = [
        (
            "wrong-pw",
            Some(("alice", "nope")),
            ConnectReturnCode::BadUserNamePassword,
            pb::RegistrationFailureReason::InvalidCredentials,
        ),
        (
            "unknown",
            Some(("carol", "x")),
            ConnectReturnCode::NotAuthorized,
            pb::RegistrationFailureReason::NoMatchingHookFound,
        ),
        (
            "anon",
            None,
            ConnectReturnCode::NotAuthorized,
            pb::RegistrationFailureReason::NoMatchingHookFound,
        ),
    ];
    for (id, creds, code, reason) in cases {
        let (_c, l) = v4::client(id, &port, creds);
        assert_eq!(v4::refused(l).await, code, "{id}");
        match next_event(&mut events).await {
            SidecarEvent::OnRegisterFailed(f) => {
                assert_eq!(f.client_id, id);
                assert_eq!(f.reason, reason as i32, "{id}");
                assert_eq!(f.username, creds.map_or("", |c| c.0));
            }
            other => panic!("expected OnRegisterFailed, got {other:?}"),
        }
    }

    // v5 alice: a publish outside her ACL gets PUBACK 0x87; inside, the event names the rule.
    let (alice, mut alice_loop) = v5::client("alice-5", &port, ("alice", "secret"));
    v5::next(&mut alice_loop, |p| matches!(p, P5::ConnAck(_))).await;
    alice
        .publish(
            "bob/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "no",
        )
        .await
        .unwrap();
    match v5::next(&mut alice_loop, |p| matches!(p, P5::PubAck(_))).await {
        P5::PubAck(a) => assert_eq!(a.reason, PubAckReason::NotAuthorized),
        _ => unreachable!(),
    }
    alice
        .publish(
            "telemetry/t1/data",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "21.5",
        )
        .await
        .unwrap();
    match v5::next(&mut alice_loop, |p| matches!(p, P5::PubAck(_))).await {
        P5::PubAck(a) => assert!(
            matches!(
                a.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ),
            "{a:?}"
        ),
        _ => unreachable!(),
    }
    match next_event(&mut events).await {
        SidecarEvent::OnPublish(p) => {
            assert_eq!(p.topic, "telemetry/t1/data");
            let acl = p.matched_acl.expect("matched_acl");
            assert_eq!(
                (acl.name.as_str(), acl.pattern.as_str()),
                ("telemetry", "telemetry/+/data")
            );
        }
        other => panic!("expected OnPublish, got {other:?}"),
    }
    // Subscribe: refused outside (0x87), granted inside with the rule in the event.
    alice
        .subscribe("bob/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    match v5::next(&mut alice_loop, |p| matches!(p, P5::SubAck(_))).await {
        P5::SubAck(s) => assert_eq!(s.return_codes, [SubscribeReasonCode::NotAuthorized]),
        _ => unreachable!(),
    }
    assert!(
        matches!(next_event(&mut events).await, SidecarEvent::OnSubscribe(s) if s.topics[0].qos == 128)
    );
    alice
        .subscribe("telemetry/+/data", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    v5::next(&mut alice_loop, |p| matches!(p, P5::SubAck(_))).await;
    match next_event(&mut events).await {
        SidecarEvent::OnSubscribe(s) => {
            let acl = s.topics[0].matched_acl.clone().expect("matched_acl");
            assert_eq!(
                (acl.name.as_str(), acl.pattern.as_str()),
                ("telemetry", "telemetry/+/data")
            );
        }
        other => panic!("expected OnSubscribe, got {other:?}"),
    }

    // v3 bob: a refused publish is acknowledged and dropped (v3 cannot say no); a refused
    // subscribe gets 0x80. alice, subscribed to alice/#... is not: she may only write there, so
    // a v3 reader with the right is used to prove nothing was routed.
    let (bob, mut bob_loop) = v4::client("bob-3", &port, Some(("bob", "bobpw")));
    v4::until(&mut bob_loop, |p| matches!(p, Incoming::ConnAck(_))).await;
    bob.subscribe("bob/#", QoS::AtLeastOnce).await.unwrap();
    v4::until(&mut bob_loop, |p| matches!(p, Incoming::SubAck(_))).await;
    assert!(matches!(
        next_event(&mut events).await,
        SidecarEvent::OnSubscribe(_)
    ));
    bob.subscribe("alice/#", QoS::AtLeastOnce).await.unwrap();
    let mut codes = None;
    v4::until(&mut bob_loop, |p| match p {
        Incoming::SubAck(s) => {
            codes = Some(s.return_codes.clone());
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(codes.unwrap(), [rumqttc::SubscribeReasonCode::Failure]);
    assert!(
        matches!(next_event(&mut events).await, SidecarEvent::OnSubscribe(s) if s.topics[0].qos == 128)
    );
    bob.publish("telemetry/t1/data", QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    v4::until(&mut bob_loop, |p| matches!(p, Incoming::PubAck(_))).await;
    // Then an allowed one: bob receives it (his own subscription), and it is the next event,
    // so the refused one was neither routed nor reported as published.
    bob.publish("bob/1", QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    let mut got = None;
    v4::until(&mut bob_loop, |p| match p {
        Incoming::Publish(p) => {
            got = Some(p.topic.clone());
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(got.as_deref(), Some("bob/1"));
    match next_event(&mut events).await {
        SidecarEvent::OnPublish(p) => assert_eq!(p.topic, "bob/1"),
        other => panic!("the refused publish was reported: {other:?}"),
    }
    // alice's subscription to telemetry got nothing from bob's forged publish.
    let quiet = timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(rumqttc::v5::Event::Incoming(P5::Publish(p))) = alice_loop.poll().await {
                return p;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a refused publish was routed: {quiet:?}");

    // Both files are re-read when they change: carol gets a password and bob read access.
    vmq_passwd(&[&passwd], "carol", "c4rol", &[]);
    std::fs::write(&acl, format!("{ACL}topic read alice/#\n")).unwrap();
    timeout(WAIT, async {
        loop {
            let (_c, mut l) = v4::client("carol", &port, Some(("carol", "c4rol")));
            if let Ok(Ok(rumqttc::Event::Incoming(Incoming::ConnAck(_)))) =
                timeout(WAIT, l.poll()).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("carol accepted after the password file changed");
    timeout(WAIT, async {
        loop {
            bob.subscribe("alice/#", QoS::AtLeastOnce).await.unwrap();
            let mut ok = false;
            v4::until(&mut bob_loop, |p| match p {
                Incoming::SubAck(s) => {
                    ok = s.return_codes[0] != rumqttc::SubscribeReasonCode::Failure;
                    true
                }
                _ => false,
            })
            .await;
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("bob may read alice/# after the ACL file changed");
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[test]
fn a_missing_or_broken_password_or_acl_file_stops_the_broker_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vernemq.conf");
    let run = |extra: &str| {
        std::fs::write(
            &conf,
            format!("listener.tcp.default = 127.0.0.1:0\nmessage_store = off\n{extra}"),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vmq-broker"))
            .arg("--config")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("nope.passwd");
    let err = run(&format!(
        "plugins.vmq_passwd = on\nvmq_passwd.password_file = {}\n",
        missing.display()
    ));
    assert!(
        err.contains("vmq_passwd.password_file") && err.contains("nope.passwd"),
        "{err}"
    );
    let acl = dir.path().join("bad.acl");
    std::fs::write(&acl, "user a\ntopic read a/#/b\n").unwrap();
    let err = run(&format!(
        "plugins.vmq_acl = on\nvmq_acl.acl_file = {}\n",
        acl.display()
    ));
    assert!(err.contains("bad.acl:2:"), "{err}");
}
