//! A VerneMQ user's own `vernemq.conf` starts this broker: VerneMQ's generated default file
//! (every key, the commented-out ones too), with only its ports changed, run from a directory
//! holding the files it names (`./etc/vmq.passwd`, `./etc/cert.pem`, ...). The keys that have no
//! meaning here are accepted; the ones a user would miss are named once each at start.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use support::{make_pki, start_broker_in, terminate, wait_with_timeout, workspace};

/// VerneMQ's default file with its `#=` lines uncommented and its ports made free. The file is
/// a copy of `shared/vernemq/default-keys.conf` (every key of VerneMQ's generated default
/// config), kept in the repository so the test runs wherever the repository is.
fn vernemq_default_conf() -> String {
    let path = workspace().join("broker/tests/fixtures/vernemq-default-keys.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| l.strip_prefix("#= ").unwrap_or(l))
        .map(|l| {
            l.replace("127.0.0.1:1883", "127.0.0.1:0")
                .replace("127.0.0.1:8883", "127.0.0.1:0")
                .replace("127.0.0.1:8888", "127.0.0.1:0")
                .replace("0.0.0.0:44053", "127.0.0.1:0")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vernemqs_default_config_starts_the_broker_and_says_what_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    // The files VerneMQ's defaults name, where they name them.
    make_pki(&etc);
    std::fs::copy(etc.join("ca.pem"), etc.join("cacerts.pem")).unwrap();
    std::fs::copy(etc.join("server.pem"), etc.join("cert.pem")).unwrap();
    std::fs::copy(etc.join("server.key"), etc.join("key.pem")).unwrap();
    std::fs::write(etc.join("vmq.acl"), "user alice\ntopic write sensors/#\n").unwrap();
    std::fs::write(etc.join("vmq.passwd"), "alice:secret\n").unwrap();
    // The user's password, hashed by vmq-passwd as a VerneMQ operator does.
    let hashed = Command::new(env!("CARGO_BIN_EXE_vmq-passwd"))
        .arg("-U")
        .arg(etc.join("vmq.passwd"))
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(&conf, vernemq_default_conf()).unwrap();

    // --check: valid, and says what does nothing here.
    let check = Command::new(support::broker_bin())
        .args(["--config", conf.to_str().unwrap(), "--check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("erlang.max_ports has no effect here"),
        "{report}"
    );
    assert!(
        report.contains("listener.ssl.pskfile is not implemented"),
        "{report}"
    );
    assert!(report.trim_end().ends_with("valid"), "{report}");

    let (broker, port) = start_broker_in(&conf, Some(dir.path()), &[]);
    let logs = broker.logs();
    // alice, with the password from the file, may publish where the ACL says.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "alice-1",
            "-u",
            "alice",
            "-P",
            "secret",
        ])
        .args(["-t", "sensors/1", "-m", "21.5", "-q", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong password is refused (vmq_passwd is on in VerneMQ's defaults).
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "wrong"])
        .args(["-t", "sensors/1", "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());

    // Each key that does nothing although a user would notice is named once, at start, in
    // the log file VerneMQ's defaults name (log.console = file), not on the console.
    let on_stderr = logs.lock().unwrap().clone();
    assert!(
        !on_stderr
            .iter()
            .any(|l| l.contains("is not implemented here"))
    );
    let lines: Vec<String> = std::fs::read_to_string(dir.path().join("log/console.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(dir.path().join("log/error.log").exists(), "log.error = on");
    let mut warned: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        if let Some(at) = l.find(" is not implemented here: ") {
            let key = l[..at].rsplit(' ').next().unwrap_or("").to_owned();
            *warned.entry(key).or_default() += 1;
        }
    }
    for key in [
        "listener.ssl.pskfile",
        "log.syslog.remote.port",
        "log.console.rotation.compress_on_rotate",
        "plugins.name",
    ] {
        assert_eq!(warned.get(key), Some(&1), "{key} warned once: {lines:#?}");
    }
    assert!(warned.values().all(|n| *n == 1), "{warned:?}");
    // Class 2 keys are silent.
    assert!(!lines.iter().any(|l| l.contains("erlang.max_ports")));
}

#[test]
fn misspelt_keys_are_all_reported_with_suggestions_and_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("typos.conf");
    std::fs::write(
        &conf,
        "listener.tcp.default = 127.0.0.1:0\nalow_anonymous = on\nmax_inflight_mesages = 5\n\
         # a comment\nmax_ofline_messages = 10\n",
    )
    .unwrap();
    let out = Command::new(support::broker_bin())
        .args(["--config", conf.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = conf.display();
    let expected = format!(
        "vmq-broker: {file}:2: unknown key \"alow_anonymous\" (did you mean \"allow_anonymous\"?)\n\
         vmq-broker: {file}:3: unknown key \"max_inflight_mesages\" (did you mean \"max_inflight_messages\"?)\n\
         vmq-broker: {file}:5: unknown key \"max_ofline_messages\" (did you mean \"max_offline_messages\"?)\n"
    );
    assert_eq!(err, expected, "one line per problem, nothing else");
    // --check says the same and exits 1, binding nothing.
    let out = Command::new(support::broker_bin())
        .args(["--config", conf.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
}

#[test]
fn docker_environment_variables_apply_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("env.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = off\nmessage_store = off\npersistent_data_dir = {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // Off in the file: an anonymous client is refused ...
    let (broker, port) = start_broker_in(&conf, None, &[]);
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous refused");
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
    // --check shows what the environment sets.
    let check = Command::new(support::broker_bin())
        .args(["--config", conf.to_str().unwrap(), "--check"])
        .env("DOCKER_VERNEMQ_ALLOW_ANONYMOUS", "on")
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("environment DOCKER_VERNEMQ_ALLOW_ANONYMOUS: allow_anonymous = on"),
        "{check:?}"
    );
    // ... on in the environment, as VerneMQ's Docker image reads it: let in.
    let (broker, port) = start_broker_in(&conf, None, &[("DOCKER_VERNEMQ_ALLOW_ANONYMOUS", "on")]);
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}

#[test]
fn log_files_are_written_where_the_config_says_and_rotate_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("log.conf");
    let log = dir.path().join("logs/console.log");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\nmessage_store = off\n\
             log.console = both\nlog.console.level = debug\nlog.console.file = {}\n\
             log.console.rotation.size = 4KB\nlog.console.rotation.keep = 2\n\
             log.error = on\nlog.error.file = {}\n",
            log.display(),
            dir.path().join("logs/error.log").display()
        ),
    )
    .unwrap();
    let (broker, port) = start_broker_in(&conf, None, &[]);
    // Each client's connection and disconnection is logged (at debug).
    for i in 0..60 {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-i", &format!("logger-{i}")])
            .args(["-t", "t", "-m", "x"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rotated = |n: usize| dir.path().join(format!("logs/console.log.{n}"));
    assert!(size(&log) > 0, "the log file is written");
    assert!(
        size(&rotated(0)) > 0 && size(&rotated(1)) > 0,
        "rotated twice at least"
    );
    assert!(
        !rotated(2).exists(),
        "only log.console.rotation.keep = 2 files are kept"
    );
    for f in [log.clone(), rotated(0), rotated(1)] {
        assert!(size(&f) <= 4096, "{} is {} bytes", f.display(), size(&f));
    }
    let newest = std::fs::read_to_string(&log).unwrap();
    assert!(newest.contains("shutting down"), "{newest}");
    assert!(dir.path().join("logs/error.log").exists());
}

#[test]
fn prometheus_namespace_prefixes_every_metric_name() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("prom.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
             allow_anonymous = on\nmessage_store = off\nprometheus_namespace = vernemq_\n\
             persistent_data_dir = {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (broker, _) = start_broker_in(&conf, None, &[]);
    let url = format!("http://127.0.0.1:{}/metrics", broker.http_port());
    let text = ureq::get(&url)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        text.contains("\nvernemq_mqtt_publish_received{node=\"VerneMQ@127.0.0.1\"} 0"),
        "{text}"
    );
    assert!(text.contains("# TYPE vernemq_socket_open counter"));
    let unprefixed = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("vernemq_"))
        .collect::<Vec<_>>();
    assert!(unprefixed.is_empty(), "{unprefixed:?}");
    terminate(&broker);
    assert!(wait_with_timeout(broker).status.success());
}
