//! The operating surface as an operator uses it: the `vmq-broker` binary with an HTTP listener,
//! `vmq-admin` as a separate process, rumqttc clients, a sidecar built on the SDK, Python's
//! Prometheus parser on `/metrics`, and headless Chromium on the status page.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use rumqttc::{AsyncClient, ConnectReturnCode, EventLoop, Incoming, QoS};
use support::{BrokerProcess, WAIT, poll_until, start_broker, terminate, wait_with_timeout};
use tokio::time::timeout;
use vmq_sidecar_sdk::Event as SidecarEvent;

fn admin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmq-admin"))
}

fn config(dir: &Path, sidecar_port: u16) -> PathBuf {
    let conf = dir.join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
             allow_anonymous = on\npersistent_data_dir = {}\n\
             plugins.vmq_events_sidecar = on\nvmq_events_sidecar.port = {sidecar_port}\n\
             vmq_events_sidecar.hooks = on_register\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    conf
}

/// Runs `vmq-admin` against the node of `conf` (the HTTP port of the running broker is given
/// with --url, since the config says port 0).
async fn admin(conf: &Path, http_port: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(admin_bin());
    cmd.arg("--config")
        .arg(conf)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{http_port}"))
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A GET on the node's HTTP listener: status and body.
async fn get(http_port: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:{http_port}{path}");
    let key = key.map(|k| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{k}:"))
    });
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::get(&url);
        if let Some(k) = key {
            req = req.header("Authorization", format!("Basic {k}"));
        }
        let resp = req
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

fn client(id: &str, port: &str) -> (AsyncClient, EventLoop) {
    support::v4_client(id, port, true)
}

/// Keeps a client's event loop running in the background.
fn keep_polling(mut eventloop: EventLoop) {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
}

async fn next_event(events: &mut vmq_sidecar_sdk::EventStream) -> SidecarEvent {
    timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("sidecar running")
}

fn stop(broker: BrokerProcess) {
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_the_node_with_vmq_admin() {
    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let mut events = sidecar.into_stream(1024);
    let port = events.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), port);
    let (broker, mqtt) = start_broker(&conf);
    let http = broker.http_port().to_owned();

    // API keys: created locally, required by the API.
    let out = admin(&conf, &http, &["api-key", "create"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_owned();
    assert_eq!(key.len(), 32);
    let (status, body) = get(&http, "/api/v1/session/show", Some(&key)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"table":[],"type":"table"}"#)
    );
    let (status, _) = get(&http, "/api/v1/session/show", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&http, "/api/v1/session/show", Some("not-a-key")).await;
    assert_eq!(status, 401);

    // session show lists a connected client.
    let (watched, mut watched_loop) = client("watched", &mqtt);
    poll_until(&mut watched_loop, |p| matches!(p, Incoming::ConnAck(_))).await;
    let out = admin(
        &conf,
        &http,
        &["session", "show", "--client_id", "--is_online"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("| watched   | true      |"), "{table}");

    // events enable makes on_publish flow to the sidecar, disable stops it.
    let out = admin(&conf, &http, &["events", "enable", "hook=on_publish"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    watched
        .publish("ev/1", QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    poll_until(&mut watched_loop, |p| matches!(p, Incoming::PubAck(_))).await;
    loop {
        match next_event(&mut events).await {
            SidecarEvent::OnPublish(p) => {
                assert_eq!(
                    (p.client_id.as_str(), p.topic.as_str()),
                    ("watched", "ev/1")
                );
                break;
            }
            SidecarEvent::OnRegister(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let out = admin(&conf, &http, &["events", "disable", "hook=on_publish"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    watched
        .publish("ev/2", QoS::AtLeastOnce, false, "two")
        .await
        .unwrap();
    poll_until(&mut watched_loop, |p| matches!(p, Incoming::PubAck(_))).await;
    watched.disconnect().await.unwrap();
    let _ = timeout(WAIT, async { while watched_loop.poll().await.is_ok() {} }).await;
    // The same client's next event travels behind anything it published: none may come first.
    let (_again, mut again_loop) = client("watched", &mqtt);
    poll_until(&mut again_loop, |p| matches!(p, Incoming::ConnAck(_))).await;
    keep_polling(again_loop);
    match next_event(&mut events).await {
        SidecarEvent::OnRegister(r) => assert_eq!(r.client_id, "watched"),
        other => panic!("on_publish is disabled, yet: {other:?}"),
    }

    // set allow_anonymous=off refuses the next anonymous client.
    let out = admin(&conf, &http, &["set", "allow_anonymous=off"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_anon, mut anon_loop) = client("anon", &mqtt);
    match timeout(WAIT, anon_loop.poll()).await.expect("an answer") {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::NotAuthorized)
        }
        other => panic!("anonymous client accepted: {other:?}"),
    }
    let out = admin(&conf, &http, &["show", "allow_anonymous"]).await;
    assert!(
        stdout(&out).contains("| allow_anonymous | off   |"),
        "{}",
        stdout(&out)
    );
    let out = admin(&conf, &http, &["set", "allow_anonymous=on"]).await;
    assert!(out.status.success());

    // trace client shows what the client sends and the auth_on_publish hook point.
    let mut trace = Command::new(admin_bin())
        .arg("--config")
        .arg(&conf)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{http}"))
        .args(["trace", "client", "client-id=traced"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let out = trace.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = timeout(WAIT, lines.recv()).await.unwrap().unwrap();
    assert!(
        first.starts_with("Starting trace for 0 existing sessions"),
        "{first}"
    );
    let (traced, mut traced_loop) = client("traced", &mqtt);
    traced
        .publish("t/1", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    poll_until(&mut traced_loop, |p| matches!(p, Incoming::PubAck(_))).await;
    let mut seen = Vec::new();
    let wanted = [
        "MQTT RECV: CID: \"traced\" CONNECT(",
        "MQTT RECV: CID: \"traced\" PUBLISH(d0, q1, r0, m1, \"t/1\") with payload:",
        "Calling auth_on_publish(None, \"traced\", 1, \"t/1\", false) with payload:",
        "MQTT SEND: CID: \"traced\" PUBACK(m1",
    ];
    while !wanted
        .iter()
        .all(|w| seen.iter().any(|l: &String| l.starts_with(w)))
    {
        match timeout(WAIT, lines.recv()).await {
            Ok(Some(l)) => seen.push(l),
            _ => panic!("trace incomplete: {seen:#?}"),
        }
    }
    let _ = trace.kill();
    let _ = trace.wait();

    // A stopped listener refuses clients and makes /health fail; started again, all is well.
    assert_eq!(get(&http, "/health", None).await.0, 200);
    let out = admin(&conf, &http, &["listener", "stop", "name=default"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = get(&http, "/health", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("mqtt.default"), "{body}");
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{mqtt}")).is_err());
    let out = admin(&conf, &http, &["listener", "start", "name=default"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = timeout(WAIT, async {
        loop {
            let r = get(&http, "/health", None).await;
            if r.0 == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{mqtt}")).is_ok());

    // Retained messages, plugins, counters.
    let (kicked, mut kicked_loop) = client("kicked", &mqtt);
    kicked
        .publish("r/1", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    poll_until(&mut kicked_loop, |p| matches!(p, Incoming::PubAck(_))).await;
    let out = stdout(&admin(&conf, &http, &["retain", "show"]).await);
    assert!(out.contains("| r/1   | kept    |"), "{out}");
    let out = stdout(&admin(&conf, &http, &["plugin", "show"]).await);
    assert!(out.contains("vmq_events_sidecar"), "{out}");
    let out = stdout(&admin(&conf, &http, &["metrics", "show"]).await);
    assert!(out.contains("| mqtt_publish_received "), "{out}");

    // session disconnect closes a client's connection; an unknown one is an error.
    let out = admin(&conf, &http, &["session", "disconnect", "client-id=kicked"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let closed = timeout(WAIT, async {
        loop {
            if kicked_loop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
    let out = admin(&conf, &http, &["session", "disconnect", "client-id=nobody"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no connected client"),
        "{}",
        stderr(&out)
    );

    // Unknown commands and bad arguments: usage, non-zero exit.
    let out = admin(&conf, &http, &["bogus", "command"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Commands"), "{}", stderr(&out));
    let out = admin(&conf, &http, &["events", "enable", "hooks=on_publish"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown argument \"hooks\""),
        "{}",
        stderr(&out)
    );

    // The key can be deleted; the API then refuses it.
    let out = admin(&conf, &http, &["api-key", "delete", &format!("key={key}")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(get(&http, "/api/v1/session/show", Some(&key)).await.0, 401);
    stop(broker);
}

/// Parses Prometheus text with Python's reference parser (prometheus_client); returns
/// `name{labels} value` lines, sorted, or panics with the parser's complaint.
fn parse_prometheus(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in f.samples:\n\
                  \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
                  \x20       print(f'{s.name}{{{labels}}} {s.value}')\n";
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics (install it: pip install -r tests/python/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn sample(lines: &[String], name_and_labels: &str) -> f64 {
    let prefix = format!("{name_and_labels} ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in {lines:#?}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_move_with_traffic() {
    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let mut events = sidecar.into_stream(1024);
    let port = events.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), port);
    let (broker, mqtt) = start_broker(&conf);
    let http = broker.http_port().to_owned();
    let node = "node=VerneMQ@127.0.0.1";

    let (status, before) = get(&http, "/metrics", None).await;
    assert_eq!(status, 200);
    let before = parse_prometheus(&before);
    let (c, mut l) = client("counted", &mqtt);
    poll_until(&mut l, |p| matches!(p, Incoming::ConnAck(_))).await;
    for i in 0..3 {
        c.publish("m/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
        poll_until(&mut l, |p| matches!(p, Incoming::PubAck(_))).await;
    }
    assert!(matches!(
        next_event(&mut events).await,
        SidecarEvent::OnRegister(_)
    ));
    let (_, after) = get(&http, "/metrics", None).await;
    let after = parse_prometheus(&after);
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(
        delta(&format!("mqtt_publish_received_total{{{node}}}")),
        3.0
    );
    assert_eq!(
        delta(&format!("mqtt_connect_received_total{{{node}}}")),
        1.0
    );
    assert_eq!(delta(&format!("socket_open_total{{{node}}}")), 1.0);
    assert_eq!(
        sample(&after, &format!("mqtt_clients_online{{{node}}}")),
        1.0
    );
    assert_eq!(
        delta(&format!("sidecar_events_total{{hook=on_register,{node}}}")),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            &format!("sidecar_events_error_total{{hook=on_publish,{node}}}")
        ),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            &format!("sidecar_events_dropped_total{{hook=on_publish,{node},reason=backlog_full}}")
        ),
        0.0
    );
    stop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), 1);
    let (broker, mqtt) = start_broker(&conf);
    let http = broker.http_port().to_owned();
    let mut clients = Vec::new();
    for id in ["page-1", "page-2"] {
        let (c, mut l) = client(id, &mqtt);
        poll_until(&mut l, |p| matches!(p, Incoming::ConnAck(_))).await;
        keep_polling(l);
        clients.push(c);
    }
    let (_, json) = get(&http, "/status.json", None).await;
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["clients_online"], 2);

    let url = format!("http://127.0.0.1:{http}/status");
    let chromium = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--enable-logging=stderr",
                    "--v=0",
                ])
                .args(args)
                .output()
                .expect("chromium must be installed (scripts/test installs Debian's chromium)")
        })
    };
    let dom = chromium(vec![
        "--virtual-time-budget=3000".into(),
        "--dump-dom".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(dom.status.success(), "{}", stderr(&dom));
    let html = stdout(&dom);
    assert!(html.contains(r#"id="clients-online">2<"#), "{html}");
    let log = stderr(&dom);
    for bad in ["Uncaught", "CONSOLE", "Failed to load resource"] {
        assert!(!log.contains(bad), "the page logged an error:\n{log}");
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(vec![
        "--window-size=1100,700".into(),
        format!("--screenshot={}", shot.display()),
        url,
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("status page screenshot: {}", shot.display());
    drop(clients);
    stop(broker);
}
