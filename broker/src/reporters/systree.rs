//! The `$SYS` tree (`systree_enabled`, `systree_interval`, `systree_qos`, `systree_retain`,
//! `systree_mountpoint`): every `systree_interval` the broker publishes each counter as a
//! message on `$SYS/<nodename>/<name with each _ a level>` (`mqtt_publish_received` is
//! `$SYS/VerneMQ@127.0.0.1/mqtt/publish/received`), the value as decimal text, as VerneMQ's
//! vmq_systree does. Topics starting with `$` are not matched by `#` or `+/...`: only clients
//! that ask for `$SYS/...` get them.

use std::sync::Arc;

use bytes::Bytes;

use crate::engine::Engine;
use crate::message::Message;
use crate::mqtt::{Properties, Publish, QoS};

/// The topic of a counter.
pub fn topic(nodename: &str, metric: &str) -> String {
    format!("$SYS/{nodename}/{}", metric.replace('_', "/"))
}

/// Publishes the tree every interval until the broker stops; returns at once when it is off.
pub async fn run(engine: Arc<Engine>) {
    let config = engine.config().systree.clone();
    if !config.enabled || config.interval.is_zero() {
        return;
    }
    let qos = QoS::from_u8(config.qos).unwrap_or_default();
    let nodename = engine.config().nodename.clone();
    let start = tokio::time::Instant::now() + config.interval;
    let mut tick = tokio::time::interval_at(start, config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = engine.stopping().cancelled() => return,
            _ = tick.tick() => {}
        }
        for (name, value) in super::values(&engine) {
            let topic = topic(&nodename, name);
            let publish = Publish {
                dup: false,
                qos,
                retain: config.retain,
                topic: topic.clone(),
                packet_id: 0,
                payload: Bytes::from(value.to_string()),
                properties: Properties::default(),
            };
            let message = Arc::new(Message::from_publish(&publish, topic.into(), None));
            if config.retain {
                engine.retain(&config.mountpoint, message.clone());
            }
            engine.publish(&config.mountpoint, &message, false);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topics_are_vernemqs() {
        assert_eq!(
            super::topic("VerneMQ@127.0.0.1", "mqtt_publish_received"),
            "$SYS/VerneMQ@127.0.0.1/mqtt/publish/received"
        );
    }
}
