//! `vmq_diversity`'s ACL cache and `vmq_api` end to end: the `vmq-broker` binary running Lua
//! scripts that fill `auth_cache`, disconnect clients and reauthorize subscriptions, with real
//! MQTT clients (mosquitto_pub, rumqttc).

mod support;

use std::time::{Duration, Instant};

use rumqttc::{Incoming, QoS};
use support::lua::{broker, next_publish};
use support::{WAIT, mosquitto_pub, poll_until, text, v4_client};

const CACHED: &str = r#"
-- Modules checked against known vectors at load (a failed assert fails the load).
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
assert(hex(crypto.hash("md5", "abc")) == "900150983cd24fb0d6963f7d28e17f72")
assert(hex(crypto.hash("sha", "abc")) == "a9993e364706816aba3e25717850c26c9cd0d89d")
assert(hex(crypto.hash("sha256", "abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
assert(#crypto.hash("sha3_256", "abc") == 32)
assert(bcrypt.hashpw("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.") == "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
local h = bcrypt.hashpw("pw", bcrypt.gen_salt(4))
assert(bcrypt.hashpw("pw", h) == h and bcrypt.hashpw("other", h) ~= h)
assert(json.encode({b = 1, a = {true, 2.5}}) == '{"a":[true,2.5],"b":1}')
assert(json.decode('{"x":null}').x == "null")
function auth_on_register(reg)
  local acls = {{pattern = "own/%c/#"}, {pattern = "open/#", max_qos = 0}}
  auth_cache.insert(reg.mountpoint, reg.client_id, reg.username or "", acls, acls)
  assert(obf.decrypt(obf.encrypt("x")) == "x" and obf.encrypt("x") ~= "x")
  if reg.password then assert(obf.decrypt(reg.password) == reg.password) end
  assert(bit32.band(6, 3) == 2 and unpack({7}) == 7)
  return true
end
-- Never asked for a client with an entry: the cache decides.
function auth_on_publish(pub) return true end
function on_publish(pub)
  if pub.topic == "own/kicker/kick" then
    log.info("kicking victim: " .. vmq_api.disconnect_by_subscriber_id({mountpoint = "", client_id = "victim"}, {}))
  end
end
hooks = {auth_on_register = auth_on_register, auth_on_publish = auth_on_publish, on_publish = on_publish}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cache_decides_before_scripts_and_vmq_api_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cached.lua");
    std::fs::write(&script, CACHED).unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "allow_anonymous = off\nvmq_diversity.c.file = {}\n",
            script.display()
        ),
    );
    let o = mosquitto_pub(
        &port,
        &[
            "-i", "me", "-u", "u", "-P", "p", "-t", "own/me/x", "-m", "1",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    // Outside its ACLs (or above max_qos): refused, although the script's own
    // auth_on_publish says yes to everything (MQTT 3: acknowledged, dropped, counted).
    let (c, mut events) = v4_client("me", &port, true);
    c.subscribe("open/#", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut events, |p| matches!(p, Incoming::SubAck(_))).await;
    c.publish("open/x", QoS::AtLeastOnce, false, "too high")
        .await
        .unwrap();
    c.publish("open/y", QoS::AtMostOnce, false, "fine")
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut events).await,
        ("open/y".into(), "fine".into())
    );
    assert_eq!(
        support::metric(b.http_port(), "mqtt_publish_auth_error").await,
        1
    );

    // vmq_api disconnects another client from a hook.
    let (victim, mut victim_events) = v4_client("victim", &port, true);
    let _ = &victim;
    poll_until(&mut victim_events, |p| matches!(p, Incoming::ConnAck(_))).await;
    let o = mosquitto_pub(&port, &["-i", "kicker", "-t", "own/kicker/kick", "-m", "1"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let kicked = tokio::time::timeout(WAIT, async {
        loop {
            if victim_events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(kicked.is_ok(), "the victim is still connected");
    drop(b);
}

/// A script that takes `secret/` subscriptions away once `admin/revoke` is published, and
/// asks for the subscriptions of the client named in the payload to be checked again.
const REAUTH: &str = r#"
kv.ensure_table({name = "acl", type = "set"})
function auth_on_subscribe(sub)
  if #kv.lookup("acl", "revoked") > 0 then
    for _, t in ipairs(sub.topics) do
      if string.sub(t[1], 1, 7) == "secret/" then return false end
    end
  end
  return true
end
function auth_on_publish(pub)
  if pub.topic == "admin/revoke" then
    kv.insert("acl", {revoked = true})
    local id = {mountpoint = pub.mountpoint, client_id = pub.payload}
    return vmq_api.reauthorize_subscriptions(pub.username, id, {}) == "ok"
  end
  return true
end
hooks = {auth_on_subscribe = auth_on_subscribe, auth_on_publish = auth_on_publish}
"#;

/// Waits until counter `name` reaches `at_least`; fails with `why` after [`WAIT`].
async fn metric_reaches(http_port: &str, name: &str, at_least: u64, why: &str) {
    let deadline = Instant::now() + WAIT;
    while support::metric(http_port, name).await < at_least {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `events` gets a PUBLISH within a second.
async fn gets_a_publish(events: &mut rumqttc::EventLoop) -> bool {
    tokio::time::timeout(Duration::from_secs(1), next_publish(events))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmq_api_reauthorizes_subscriptions_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("reauth.lua");
    std::fs::write(&script, REAUTH).unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "allow_anonymous = on\nvmq_diversity.r.file = {}\n",
            script.display()
        ),
    );
    let subscribe = |id: &'static str, filter: &'static str, clean: bool| {
        let port = port.clone();
        async move {
            let (c, mut events) = v4_client(id, &port, clean);
            c.subscribe(filter, QoS::AtMostOnce).await.unwrap();
            poll_until(&mut events, |p| matches!(p, Incoming::SubAck(_))).await;
            (c, events)
        }
    };
    let publish = |topic: &'static str, payload: &'static str| {
        let port = port.clone();
        async move {
            let o = mosquitto_pub(&port, &["-t", topic, "-m", payload]).await;
            assert!(o.status.success(), "{}", text(&o));
        }
    };
    let (_x, mut x) = subscribe("x", "secret/#", true).await;
    let (_y, mut y) = subscribe("y", "open/#", true).await;
    // A persistent session that goes offline before its reauthorization.
    let (later, mut later_events) = subscribe("later", "secret/#", false).await;
    later.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while later_events.poll().await.is_ok() {}
    })
    .await;
    drop(later_events);
    publish("secret/1", "before").await;
    assert_eq!(
        next_publish(&mut x).await,
        ("secret/1".into(), "before".into())
    );

    // Asked from a hook: x loses secret/#, y keeps open/# (asked too, still allowed).
    publish("admin/revoke", "x").await;
    publish("admin/revoke", "y").await;
    let removed = "subscriptions_reauthorize_removed";
    metric_reaches(
        b.http_port(),
        removed,
        1,
        "x's subscription was not removed",
    )
    .await;
    publish("secret/2", "after").await;
    publish("open/2", "still").await;
    assert_eq!(
        next_publish(&mut y).await,
        ("open/2".into(), "still".into())
    );
    assert!(!gets_a_publish(&mut x).await, "x still gets secret/#");

    // No such session: "not_found" (the script then refuses the admin publish).
    publish("admin/revoke", "nobody").await;
    let refused = "mqtt_publish_auth_error";
    metric_reaches(
        b.http_port(),
        refused,
        1,
        "no not_found for a missing session",
    )
    .await;

    // An offline session: "ok" now, checked when its client comes back.
    publish("admin/revoke", "later").await;
    assert_eq!(
        support::metric(b.http_port(), refused).await,
        1,
        "the offline session was not found"
    );
    let (_later, mut later_events) = v4_client("later", &port, false);
    poll_until(&mut later_events, |p| matches!(p, Incoming::ConnAck(_))).await;
    metric_reaches(
        b.http_port(),
        removed,
        2,
        "the offline session kept secret/#",
    )
    .await;
    // What it was sent while offline and still subscribed arrives now; nothing after.
    while gets_a_publish(&mut later_events).await {}
    publish("secret/3", "gone").await;
    assert!(
        !gets_a_publish(&mut later_events).await,
        "later still gets secret/#"
    );
    drop(b);
}
