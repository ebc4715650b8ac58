//! Helpers for tests that run the `vmq-broker` binary as an operator does.
#![allow(dead_code)]

pub mod cluster;
pub mod databases;
pub mod endpoint;
pub mod lua;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(30);

pub fn broker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vmq-broker"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the broker binary on `conf`; returns it and the MQTT port it printed. A thread keeps
/// reading its stderr, so the broker's logs never block on (or lose) their pipe.
pub fn start_broker(conf: &Path) -> (BrokerProcess, String) {
    start_broker_in(conf, None, &[])
}

/// [`start_broker`] in the working directory `cwd` (relative paths of the config resolve
/// there), with `env` added to its environment.
pub fn start_broker_in(
    conf: &Path,
    cwd: Option<&Path>,
    env: &[(&str, &str)],
) -> (BrokerProcess, String) {
    let mut command = Command::new(broker_bin());
    command.arg("--config").arg(conf).stderr(Stdio::piped());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let all = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            all.lock().unwrap().push(line.clone());
            if line.starts_with("vmq-broker: ") && !line.contains(" listening on ")
                || line.starts_with("Error:")
                || line.starts_with("Caused by")
                || line.starts_with("    ")
            {
                let _ = tx.send(("LOG", line.clone()));
            }
            for kind in ["MQTT", "HTTP"] {
                if let Some(rest) = line.strip_prefix(&format!("vmq-broker: {kind} listening on "))
                {
                    let port = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((kind, port));
                }
            }
        }
    });
    let wants_http = std::fs::read_to_string(conf).is_ok_and(|t| t.contains("listener.http."));
    let mut mqtt: Vec<String> = Vec::new();
    let mut http = None;
    let mut log = Vec::new();
    while mqtt.is_empty() || (wants_http && http.is_none()) {
        match rx.recv_timeout(WAIT) {
            Ok(("MQTT", port)) => mqtt.push(port),
            Ok(("HTTP", port)) => http = http.or(Some(port)),
            Ok((_, line)) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the broker did not report its ports:\n{}", log.join("\n"));
            }
        }
    }
    let first = mqtt[0].clone();
    (BrokerProcess(Some(child), http, mqtt, logs), first)
}

/// A test CA, a server certificate for 127.0.0.1/localhost and a client certificate whose
/// common name is `device-42`, as PEM files in `dir`; returns the CA to issue more.
pub fn make_pki(dir: &Path) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "vmq test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    issue(&ca, dir, "server", "localhost");
    issue(&ca, dir, "client", "device-42");
    ca
}

/// Writes `<name>.pem` and `<name>.key`: a certificate for `cn` (and, for servers, 127.0.0.1
/// and localhost) signed by `ca`.
pub fn issue(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: &Path,
    name: &str,
    cn: &str,
) {
    let sans = if name == "server" {
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
    } else {
        vec![]
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = p.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A running broker process; killed if a failing test lets go of it, so no broker outlives
/// its test (and holds the test harness's pipes open).
pub struct BrokerProcess(Option<Child>, Option<String>, Vec<String>, Logs);

/// Every line the broker wrote to stderr so far (the reading thread appends until it exits).
pub type Logs = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl BrokerProcess {
    /// The ports of its MQTT listeners, in the order it printed them (with an HTTP listener in
    /// the config, all of them; otherwise at least the first).
    pub fn mqtt_ports(&self) -> &[String] {
        &self.2
    }

    /// The port of its first HTTP listener, if its config has one.
    pub fn http_port(&self) -> &str {
        self.1.as_deref().expect("an HTTP listener in the config")
    }

    /// Its stderr lines, as they arrive.
    pub fn logs(&self) -> Logs {
        self.3.clone()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGTERM, as an init system stops the broker.
pub fn terminate(broker: &BrokerProcess) {
    signal(broker, "-TERM");
}

/// Sends a signal (`-HUP`, `-TERM`, ...) to the broker.
pub fn signal(broker: &BrokerProcess, sig: &str) {
    if let Some(child) = &broker.0 {
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    }
}

/// Waits for the broker to exit and returns its output.
pub fn wait_with_timeout(mut broker: BrokerProcess) -> Output {
    let mut child = broker.0.take().expect("running");
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

/// A rumqttc (MQTT 3.1.1) client for the broker on `port`.
pub fn v4_client(id: &str, port: &str, clean: bool) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port.parse().unwrap());
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(opts, 100)
}

/// Polls `eventloop` until `done` accepts an incoming packet; fails on a connection error or
/// after [`WAIT`].
pub async fn poll_until(
    eventloop: &mut rumqttc::EventLoop,
    mut done: impl FnMut(&rumqttc::Incoming) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(p)) if done(&p) => return,
                Ok(_) => {}
                Err(e) => panic!("client error: {e}"),
            }
        }
    })
    .await
    .expect("in time");
}

/// The value of a counter (labelled only with the node) in the broker's `/metrics`.
pub async fn metric(http_port: &str, name: &str) -> u64 {
    let url = format!("http://127.0.0.1:{http_port}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    let prefix = format!("{name}{{node=\"VerneMQ@127.0.0.1\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

pub async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs mosquitto-clients)"))
    })
    .await
    .unwrap()
}

/// `mosquitto_pub` with `args` against the broker on `port`.
pub async fn mosquitto_pub(port: &str, args: &[&str]) -> Output {
    let mut a = vec![
        "-h".to_owned(),
        "127.0.0.1".into(),
        "-p".into(),
        port.into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    run("mosquitto_pub", a).await
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn b64(s: &str) -> String {
    {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}

pub async fn admin(conf: &Path, http_port: &str, args: &[&str]) -> Output {
    let mut a = vec![
        "--config".to_owned(),
        conf.display().to_string(),
        "--url".into(),
        format!("http://127.0.0.1:{http_port}"),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    run(env!("CARGO_BIN_EXE_vmq-admin"), a).await
}

/// A labelled sample of `/metrics` (summed over the lines that contain every `parts`).
pub async fn labelled(http: &str, name: &str, parts: &[&str]) -> u64 {
    let url = format!("http://127.0.0.1:{http}/metrics");
    let body = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A broker with an HTTP listener, passwd and acl off (as a webhooks-only VerneMQ setup is),
/// and `webhooks`: (hook, endpoint, extra per-webhook lines).
pub fn webhooks_broker(
    dir: &Path,
    extra: &str,
    webhooks: &[(&str, &str)],
) -> (BrokerProcess, String, PathBuf) {
    let mut conf = format!(
        "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
         allow_anonymous = off\nplugins.vmq_passwd = off\nplugins.vmq_acl = off\n\
         plugins.vmq_webhooks = on\npersistent_data_dir = {}\n{extra}",
        dir.join("data").display()
    );
    for (i, (hook, endpoint)) in webhooks.iter().enumerate() {
        conf.push_str(&format!(
            "vmq_webhooks.wh{i:02}.hook = {hook}\nvmq_webhooks.wh{i:02}.endpoint = {endpoint}\n"
        ));
    }
    let path = dir.join("vernemq.conf");
    std::fs::write(&path, conf).unwrap();
    let (b, port) = start_broker(&path);
    (b, port, path)
}
