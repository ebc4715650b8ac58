//! The `vmq-broker` binary as an operator runs it: the shipped config, a bad config, a clean
//! stop on SIGTERM.

mod support;

use std::process::Command;
use support::{WAIT, broker_bin, start_broker, terminate, wait_with_timeout, workspace};

#[test]
fn shipped_config_runs_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped file, with an ephemeral port so tests never collide with a running broker.
    let shipped = std::fs::read_to_string(workspace().join("vernemq.conf")).unwrap();
    assert!(shipped.contains("listener.tcp.default = 127.0.0.1:1883"));
    let conf = dir.path().join("vernemq.conf");
    let data = format!(
        "persistent_data_dir = {}",
        dir.path().join("data").display()
    );
    std::fs::write(
        &conf,
        shipped
            .replace("127.0.0.1:1883", "127.0.0.1:0")
            .replace("127.0.0.1:8888", "127.0.0.1:0")
            .replace("persistent_data_dir = ./data", &data),
    )
    .unwrap();

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
        shipped
            .replace("127.0.0.1:1883", "127.0.0.1:0")
            .replace("127.0.0.1:8888", "127.0.0.1:0")
            .replace(
                "vmq_events_sidecar.port = 8890",
                &format!("vmq_events_sidecar.port = {sidecar_port}"),
            )
            .replace(
                "persistent_data_dir = ./data",
                &format!(
                    "persistent_data_dir = {}",
                    dir.path().join("data").display()
                ),
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
