//! The `vmq-broker` binary as an operator runs it: the shipped config, a bad config, a clean
//! stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn broker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmq-broker"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the broker binary on `conf`; returns it and the MQTT port it printed. A thread keeps
/// reading its stderr, so the broker's logs never block on (or lose) their pipe.
fn start_broker(conf: &Path) -> (Child, String) {
    let mut child = Command::new(broker_bin())
        .arg("--config")
        .arg(conf)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("vmq-broker: MQTT listening on ") {
                let port = rest
                    .trim()
                    .rsplit(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker did not report its MQTT port");
        }
    }
}

/// SIGTERM, as an init system stops the broker.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_with_timeout(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("broker did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn shipped_config_runs_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped file, with an ephemeral port so tests never collide with a running broker.
    let shipped = std::fs::read_to_string(workspace().join("vernemq.conf")).unwrap();
    assert!(shipped.contains("listener.tcp.default = 127.0.0.1:1883"));
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(&conf, shipped.replace("127.0.0.1:1883", "127.0.0.1:0")).unwrap();

    let (child, port) = start_broker(&conf);
    let port = port.as_str();
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "smoke",
            "-m",
            "hi",
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let start = std::time::Instant::now();
    terminate(&child);
    let out = wait_with_timeout(child);
    assert!(out.status.success(), "clean exit on SIGTERM");
    assert!(start.elapsed() < WAIT);
}

/// The README's quick start: the broker on the shipped config with the relay on, a sidecar on
/// the relay's port, and mosquitto_pub making events appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_relays_events_to_a_sidecar() {
    use futures::StreamExt;
    let sidecar = vmq_sidecar_sdk::Server::bind("127.0.0.1:0").await.unwrap();
    let sidecar_port = sidecar.local_addr().unwrap().port();
    let mut events = sidecar.into_stream(64);
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(workspace().join("vernemq.conf")).unwrap();
    assert!(shipped.contains("plugins.vmq_events_sidecar = on"));
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(
        &conf,
        shipped.replace("127.0.0.1:1883", "127.0.0.1:0").replace(
            "vmq_events_sidecar.port = 8890",
            &format!("vmq_events_sidecar.port = {sidecar_port}"),
        ),
    )
    .unwrap();
    let (child, port) = start_broker(&conf);
    let port = port.as_str().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-i",
                "quickstart",
                "-t",
                "hello/world",
                "-m",
                "hi",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let mut hooks = Vec::new();
    while !hooks.contains(&"on_client_gone") {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("events arrive")
            .unwrap();
        assert_eq!(e.client_id(), Some("quickstart"));
        hooks.push(e.hook());
    }
    assert_eq!(
        hooks,
        [
            "on_register",
            "on_client_wakeup",
            "on_publish",
            "on_message_drop",
            "on_client_gone"
        ]
    );
    terminate(&child);
    assert!(wait_with_timeout(child).status.success());
}

#[test]
fn bad_config_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "listener.tcp.default = 127.0.0.1:0\nmax_inflight_messages = lots\n",
    )
    .unwrap();
    let out = Command::new(broker_bin())
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:2: expected a number, got \"lots\""),
        "{err}"
    );

    let out = Command::new(broker_bin())
        .args(["--config", "/nonexistent/vernemq.conf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/vernemq.conf"));
}
