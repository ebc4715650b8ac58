//! Last wills: published when a client goes away without DISCONNECT (or with v5 reason 0x04),
//! after the v5 will delay, unless the session was resumed in the meantime; at the latest when
//! the session ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::broker::Broker;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::mqtt::{Publish, Will};
use crate::session::SessionSlot;

/// Publishes `will` now.
pub fn publish_will(broker: &Broker, mountpoint: &str, client_id: &Arc<str>, will: &Will) {
    let publish = Publish {
        dup: false,
        qos: will.qos,
        retain: will.retain,
        topic: will.topic.clone(),
        packet_id: 0,
        payload: will.payload.clone(),
        properties: will.properties.clone(),
    };
    let mut message = Message::from_publish(
        &publish,
        will.topic.as_str().into(),
        Some(client_id.clone()),
    );
    message.properties.will_delay_interval = None;
    let message = Arc::new(message);
    if will.retain && broker.config.retain_available {
        broker.retain(mountpoint, message.clone());
    }
    broker.router.route(mountpoint, &message, false);
    Metrics::inc(&broker.metrics.wills_published);
}

/// Schedules `will` after `delay`: it is published unless the session was attached again.
pub fn schedule_will(broker: Arc<Broker>, slot: Arc<SessionSlot>, will: Will, delay: Duration) {
    if delay.is_zero() {
        publish_will(&broker, &slot.mountpoint, &slot.client_id, &will);
        return;
    }
    let generation = slot.generation.load(Ordering::Acquire);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if slot.generation.load(Ordering::Acquire) == generation && !slot.mailbox.is_online() {
            publish_will(&broker, &slot.mountpoint, &slot.client_id, &will);
        }
    });
}
