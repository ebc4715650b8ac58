//! `vmq_diversity` end to end: the `vmq-broker` binary running Lua scripts as VerneMQ users
//! write them, `vmq-admin script ...` as a separate process, real MQTT clients (mosquitto_pub/sub
//! 3.1.1 and 5, rumqttc) and a real HTTP server for the seed's sample script.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Incoming, QoS, SubscribeReasonCode};
use support::endpoint::Endpoint;
use support::lua::{broker, next_publish};
use support::{WAIT, admin, labelled, mosquitto_pub, poll_until, run, text, v4_client};

const MAIN: &str = r#"
local helper = require "helper"
num_states = 4
kv.ensure_table({name = "seen", type = "duplicate_bag"})

function auth_on_register(reg)
  if reg.username == "bad" then return false end
  if reg.username == "loop" then while true do end end
  return true
end

function auth_on_publish(pub)
  kv.insert("seen", {states = __SCRIPT_INSTANCE_ID__})
  if pub.topic == "in/x" then return {topic = helper.reroute("x")} end
  if pub.topic == "boom" then error("boom requested") end
  if pub.topic == "kv/read" then
    local ids, n = {}, 0
    for _, id in ipairs(kv.lookup("seen", "states")) do
      if not ids[id] then ids[id] = true; n = n + 1 end
    end
    return {payload = json.encode({calls = #kv.lookup("seen", "states"), states = n})}
  end
  if pub.topic == "state/read" then
    calls = (calls or 0) + 1
    return {payload = tostring(calls)}
  end
  if pub.topic == "state/kept" then return nil end
  return true
end

function auth_on_subscribe(sub)
  local out = {}
  for i, t in ipairs(sub.topics) do
    if t[1] == "test/nosubscribe" then out[i] = {t[1], 128} else out[i] = {t[1], t[2]} end
  end
  return out
end

function auth_on_subscribe_m5(sub)
  local out = {}
  for i, t in ipairs(sub.topics) do
    if t[1] == "test/nosubscribe" then out[i] = {t[1], {135, {}}} else out[i] = t end
  end
  return {topics = out}
end

hooks = {
  auth_on_register = auth_on_register,
  auth_on_register_m5 = auth_on_register,
  auth_on_publish = auth_on_publish,
  auth_on_publish_m5 = auth_on_publish,
  auth_on_subscribe = auth_on_subscribe,
  auth_on_subscribe_m5 = auth_on_subscribe_m5,
}
"#;

const HELPER: &str = r#"
local M = {}
function M.reroute(topic) return "rerouted/" .. topic end
return M
"#;

const KEPT: &str = r#"
keep_state = true
function kept(pub)
  if pub.topic == "state/kept" then
    calls = (calls or 0) + 1
    return {payload = tostring(calls)}
  end
end
hooks = {auth_on_publish = kept}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_refuse_reroute_share_kv_keep_or_reset_state_and_survive_errors() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("main.lua"), MAIN).unwrap();
    std::fs::write(scripts.join("helper.lua"), HELPER).unwrap();
    std::fs::write(dir.path().join("kept.lua"), KEPT).unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "allow_anonymous = off\nvmq_diversity.script_dir = {}\n\
             vmq_diversity.kept.file = {}\nvmq_diversity.hook_timeout = 1s\n",
            scripts.display(),
            dir.path().join("kept.lua").display()
        ),
    );
    let http = b.http_port().to_owned();
    // `return false`: refused, as VerneMQ maps it (invalid credentials: 4 / 0x86).
    let o = mosquitto_pub(
        &port,
        &["-V", "mqttv311", "-u", "bad", "-t", "t", "-m", "x"],
    )
    .await;
    assert!(
        text(&o).contains("bad user name or password"),
        "{}",
        text(&o)
    );
    let o = mosquitto_pub(&port, &["-V", "mqttv5", "-u", "bad", "-t", "t", "-m", "x"]).await;
    assert!(
        text(&o).contains("Bad User Name or Password"),
        "{}",
        text(&o)
    );

    // Paho's test_subscribe_failure: only the refused topic fails.
    let (sub, mut events) = v4_client("sub", &port, true);
    sub.subscribe_many([
        rumqttc::SubscribeFilter::new("#".into(), QoS::AtMostOnce),
        rumqttc::SubscribeFilter::new("test/nosubscribe".into(), QoS::AtLeastOnce),
    ])
    .await
    .unwrap();
    let mut codes = Vec::new();
    poll_until(&mut events, |p| match p {
        Incoming::SubAck(a) => {
            codes = a.return_codes.clone();
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Failure
        ]
    );
    let o = run(
        "mosquitto_sub",
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-d",
            "-t",
            "ok/topic",
            "-t",
            "test/nosubscribe",
            "-W",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(
        text(&o).contains("Subscribed (mid: 1): 0, 135"),
        "{}",
        text(&o)
    );

    // A table reroutes; `require` found helper.lua in script_dir.
    let o = mosquitto_pub(&port, &["-t", "in/x", "-m", "hello"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        next_publish(&mut events).await,
        ("rerouted/x".into(), "hello".into())
    );

    // kv is shared by the 4 states: 8 clients at once, then the count.
    let pubs: Vec<_> = (0..8)
        .map(|i| {
            let port = port.clone();
            tokio::spawn(async move {
                mosquitto_pub(&port, &["-t", &format!("n/{i}"), "-m", "x"]).await
            })
        })
        .collect();
    for p in pubs {
        assert!(p.await.unwrap().status.success());
    }
    for _ in 0..8 {
        next_publish(&mut events).await;
    }
    let o = mosquitto_pub(&port, &["-t", "kv/read", "-m", "?"]).await;
    assert!(o.status.success());
    let (_, counts) = next_publish(&mut events).await;
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    // in/x, 8 n/*, kv/read: every call of every state counted in the one table.
    assert_eq!(counts["calls"], 10, "{counts}");
    let states = counts["states"].as_u64().unwrap();
    assert!((1..=4).contains(&states), "{counts}");

    // Globals set in a call are gone by the next, unless the script keeps state.
    for expected in ["1", "1"] {
        mosquitto_pub(&port, &["-t", "state/read", "-m", "?"]).await;
        assert_eq!(next_publish(&mut events).await.1, expected);
    }
    for expected in ["1", "2"] {
        mosquitto_pub(&port, &["-t", "state/kept", "-m", "?"]).await;
        assert_eq!(next_publish(&mut events).await.1, expected);
    }

    // A hook that raises: logged with script and hook, counted; no script allowed the
    // publish, so the MQTT 3.1.1 publisher is disconnected. The states live on.
    mosquitto_pub(&port, &["-t", "boom", "-m", "x", "-q", "1"]).await;
    assert!(labelled(&http, "lua_hook_errors", &["main.lua", "auth_on_publish\""]).await >= 1);
    // A script that loops forever is stopped by hook_timeout; the client is refused.
    let started = Instant::now();
    let o = mosquitto_pub(&port, &["-u", "loop", "-t", "t", "-m", "x"]).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        labelled(&http, "lua_hook_timeouts", &["auth_on_register\""]).await,
        1
    );
    // Every state still answers.
    for i in 0..8 {
        let o = mosquitto_pub(&port, &["-i", &format!("after-{i}"), "-t", "t", "-m", "x"]).await;
        assert!(o.status.success(), "{}", text(&o));
    }
    let logs = b.logs();
    let start = Instant::now();
    loop {
        let l = logs.lock().unwrap().join("\n");
        if l.contains("boom requested") && l.contains("main.lua") {
            break;
        }
        assert!(start.elapsed() < WAIT, "the log does not say why:\n{l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmq_admin_loads_reloads_and_unloads_while_clients_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (b, port, conf) = broker(dir.path(), "allow_anonymous = on\n");
    let http = b.http_port().to_owned();
    // A syntax error names the file and line; the broker keeps serving.
    let bad = dir.path().join("bad.lua");
    std::fs::write(&bad, "hooks = {}\nfunction broken(\n").unwrap();
    let out = admin(
        &conf,
        &http,
        &["script", "load", &format!("path={}", bad.display())],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("Can't load script!"), "{}", text(&out));
    assert!(text(&out).contains("bad.lua:3:"), "{}", text(&out));
    let o = mosquitto_pub(&port, &["-t", "t", "-m", "x"]).await;
    assert!(o.status.success());

    let script = dir.path().join("route.lua");
    let version = |v: &str| {
        format!(
            "function ap(pub)\n  if pub.topic == \"a\" then return {{topic = \"{v}/a\"}} end\n  \
             return true\nend\nhooks = {{auth_on_publish = ap}}\nnum_states = 2\n"
        )
    };
    std::fs::write(&script, version("v1")).unwrap();
    let path = format!("path={}", script.display());
    let out = admin(&conf, &http, &["script", "load", &path]).await;
    assert!(
        text(&out).contains("Script successfully loaded!"),
        "{}",
        text(&out)
    );

    let (sub, mut events) = v4_client("watch", &port, true);
    sub.subscribe("+/a", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut events, |p| matches!(p, Incoming::SubAck(_))).await;
    let o = mosquitto_pub(&port, &["-t", "a", "-m", "1"]).await;
    assert!(o.status.success());
    assert_eq!(next_publish(&mut events).await.0, "v1/a");

    // Reload while a client publishes QoS 1 as fast as it can: every PUBLISH acknowledged.
    let (publisher, mut pub_events) = v4_client("busy", &port, true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = tokio::spawn(async move {
        let (mut sent, mut acked) = (0u64, 0u64);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) || acked < sent {
            if !flag.load(std::sync::atomic::Ordering::Relaxed) && sent - acked < 10 {
                publisher
                    .publish("load", QoS::AtLeastOnce, false, "x")
                    .await
                    .unwrap();
                sent += 1;
            }
            match tokio::time::timeout(WAIT, pub_events.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publisher failed: {e}"),
                Err(_) => panic!("no progress"),
            }
        }
        (sent, acked)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&script, version("v2")).unwrap();
    let out = admin(&conf, &http, &["script", "reload", &path]).await;
    assert!(
        text(&out).contains("Script successfully reloaded!"),
        "{}",
        text(&out)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, acked) = load.await.unwrap();
    assert!(
        sent > 10 && sent == acked,
        "{sent} sent, {acked} acknowledged"
    );
    let o = mosquitto_pub(&port, &["-t", "a", "-m", "2"]).await;
    assert!(o.status.success());
    assert_eq!(next_publish(&mut events).await.0, "v2/a");

    // A reload that does not compile keeps the old version, and says so.
    std::fs::write(&script, "hooks = {\n").unwrap();
    let out = admin(&conf, &http, &["script", "reload", &path]).await;
    assert!(
        text(&out).contains("Can't reload script!"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("route.lua:"), "{}", text(&out));
    mosquitto_pub(&port, &["-t", "a", "-m", "3"]).await;
    assert_eq!(next_publish(&mut events).await.0, "v2/a");

    let out = admin(&conf, &http, &["script", "show"]).await;
    assert!(text(&out).contains("route.lua"), "{}", text(&out));
    let out = admin(&conf, &http, &["script", "unload", &path]).await;
    assert!(
        text(&out).contains("Script successfully unloaded!"),
        "{}",
        text(&out)
    );
    sub.subscribe("a", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut events, |p| matches!(p, Incoming::SubAck(_))).await;
    mosquitto_pub(&port, &["-t", "a", "-m", "4"]).await;
    assert_eq!(next_publish(&mut events).await, ("a".into(), "4".into()));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_sample_script_posts_every_hook_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start().await;
    let port_of = ep
        .url
        .trim_end_matches("/vmq")
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello_vmq.lua"),
    )
    .unwrap();
    let script = dir.path().join("hello_vmq.lua");
    std::fs::write(
        &script,
        fixture.replace("127.0.0.1:9595", &format!("127.0.0.1:{port_of}")),
    )
    .unwrap();
    let (b, port, conf) = broker(dir.path(), "allow_anonymous = off\n");
    let out = admin(
        &conf,
        b.http_port(),
        &["script", "load", &format!("path={}", script.display())],
    )
    .await;
    assert!(
        text(&out).contains("Script successfully loaded!"),
        "{}",
        text(&out)
    );

    let o = mosquitto_pub(
        &port,
        &[
            "-V", "mqttv311", "-i", "seed-3", "-u", "user", "-P", "pw", "-t", "a/b", "-m", "hi",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let reg = &ep.wait_calls("my_auth_on_register", 1).await[0];
    assert_eq!(reg.body["addr"], "127.0.0.1");
    assert!(reg.body["port"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(reg.body["client_id"], "seed-3");
    assert_eq!(reg.body["username"], "user");
    assert_eq!(reg.body["password"], "pw");
    assert_eq!(reg.body["mountpoint"], "");
    assert_eq!(reg.body["clean_session"], true);
    let publ = &ep.wait_calls("my_auth_on_publish", 1).await[0];
    assert_eq!(
        publ.body,
        serde_json::json!({"client_id":"seed-3","mountpoint":"","payload":"hi","qos":0,
                           "retain":false,"topic":"a/b","username":"user"})
    );
    let gone = &ep.wait_calls("my_on_client_gone", 1).await[0];
    assert_eq!(
        gone.body,
        serde_json::json!({"client_id":"seed-3","mountpoint":""})
    );

    // MQTT 5: the _m5 hooks, with properties.
    let o = mosquitto_pub(
        &port,
        &[
            "-V",
            "mqttv5",
            "-i",
            "seed-5",
            "-u",
            "user",
            "-P",
            "pw",
            "-t",
            "c/d",
            "-m",
            "5",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let regs = ep.wait_calls("my_auth_on_register", 2).await;
    assert_eq!(regs[1].body["client_id"], "seed-5");
    assert_eq!(regs[1].body["clean_start"], true);
    let p5 = ep.wait_calls("my_auth_on_publish", 2).await;
    assert_eq!(
        p5[1].body["properties"]["p_user_property"],
        serde_json::json!([{"k":"v"}])
    );
    let o = run(
        "mosquitto_sub",
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "user",
            "-P",
            "pw",
            "-t",
            "s/#",
            "-W",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let _ = o;
    let s5 = &ep.wait_calls("my_auth_on_subscribe_m5", 1).await[0];
    assert_eq!(
        s5.body["topics"],
        serde_json::json!([["s/#", [0, {"no_local":false,"rap":false,"retain_handling":"send_retain"}]]])
    );
    let o = run(
        "mosquitto_sub",
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-u",
            "user",
            "-P",
            "pw",
            "-t",
            "s/#",
            "-q",
            "1",
            "-W",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let _ = o;
    let s3 = &ep.wait_calls("my_auth_on_subscribe", 1).await[0];
    assert_eq!(s3.body["topics"], serde_json::json!([["s/#", 1]]));
    drop(b);
}

/// A script that refuses every tenth publish and rewrites every seventh, from 4 states.
const BURST: &str = r#"
num_states = 4
function auth_on_register(reg) return true end
function auth_on_publish(pub)
  local n = tonumber(pub.payload)
  if n % 10 == 0 then return false end
  if n % 7 == 0 then return {payload = "seven-" .. pub.payload} end
  return true
end
hooks = {auth_on_register = auth_on_register, auth_on_publish = auth_on_publish}
"#;

/// MQTT 3.1.1 packets written by hand, so that a whole burst reaches the broker in one write.
fn burst_bytes(count: u32) -> Vec<u8> {
    fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
        out.push(first);
        let mut len = body.len();
        loop {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            out.push(b);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
    }
    let mut out = Vec::new();
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 5];
    connect.extend_from_slice(b"burst");
    packet(&mut out, 0x10, &connect);
    for n in 1..=count {
        let mut body = vec![0, 7];
        body.extend_from_slice(b"burst/x");
        body.extend_from_slice(n.to_string().as_bytes());
        packet(&mut out, 0x30, &body);
        if n == count / 2 {
            packet(&mut out, 0xC0, &[]); // PINGREQ between two runs of publishes
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publishes_is_decided_together_and_delivered_in_order() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("burst.lua");
    std::fs::write(&script, BURST).unwrap();
    let (b, port, _) = broker(
        dir.path(),
        &format!(
            "allow_anonymous = off\nvmq_diversity.burst.file = {}\n",
            script.display()
        ),
    );
    let (sub, mut events) = v4_client("burst-sub", &port, true);
    sub.subscribe("burst/#", QoS::AtMostOnce).await.unwrap();
    poll_until(&mut events, |p| matches!(p, Incoming::SubAck(_))).await;

    const COUNT: u32 = 300;
    let mut raw = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    raw.write_all(&burst_bytes(COUNT)).await.unwrap();
    let expected: Vec<String> = (1..=COUNT)
        .filter(|n| n % 10 != 0)
        .map(|n| {
            if n % 7 == 0 {
                format!("seven-{n}")
            } else {
                n.to_string()
            }
        })
        .collect();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(next_publish(&mut events).await.1);
    }
    assert_eq!(got, expected);
    // Every refusal was counted, and the client is still connected (PINGREQ answered).
    assert_eq!(
        support::metric(b.http_port(), "mqtt_publish_auth_error").await,
        u64::from(COUNT / 10)
    );
    let mut pong = [0u8; 6];
    use tokio::io::AsyncReadExt;
    raw.read_exact(&mut pong[..4]).await.unwrap(); // CONNACK
    raw.read_exact(&mut pong[4..]).await.unwrap(); // PINGRESP
    assert_eq!(&pong[4..], &[0xD0, 0]);
    drop(b);
}
