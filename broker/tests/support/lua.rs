//! The Lua tests' broker and what they wait for (broker/tests/lua.rs, lua_api.rs).

use std::path::{Path, PathBuf};

use rumqttc::Incoming;

use super::{BrokerProcess, poll_until, start_broker};

/// A broker with an HTTP listener, passwd and acl off (as VerneMQ's docs tell Lua auth users),
/// vmq_diversity on, and `extra` lines.
pub fn broker(dir: &Path, extra: &str) -> (BrokerProcess, String, PathBuf) {
    let conf = format!(
        "listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
         plugins.vmq_passwd = off\nplugins.vmq_acl = off\nplugins.vmq_diversity = on\n\
         persistent_data_dir = {}\n{extra}",
        dir.join("data").display()
    );
    let path = dir.join("vernemq.conf");
    std::fs::write(&path, conf).unwrap();
    let (b, port) = start_broker(&path);
    (b, port, path)
}

/// Waits for the next PUBLISH; (topic, payload).
pub async fn next_publish(events: &mut rumqttc::EventLoop) -> (String, String) {
    let mut got = None;
    poll_until(events, |p| match p {
        Incoming::Publish(p) => {
            got = Some((
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
            true
        }
        _ => false,
    })
    .await;
    got.unwrap()
}
