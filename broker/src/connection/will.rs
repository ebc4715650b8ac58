//! Last wills: published when a client goes away without DISCONNECT (or with v5 reason 0x04),
//! after the v5 will delay, unless the session was resumed in the meantime; at the latest when
//! the session ends.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, SessionSlot};
use crate::message::Message;
use crate::mqtt::{Publish, Will};

/// The message a will becomes.
fn will_message(client_id: &Arc<str>, will: &Will) -> Arc<Message> {
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
    if let Some(p) = message.properties.present_mut() {
        p.will_delay_interval = None;
    }
    Arc::new(message)
}

/// Publishes `will` after `delay` (at once if zero): it is published unless the session was
/// attached again in between.
pub fn schedule_will(engine: &Engine, slot: &Arc<SessionSlot>, will: &Will, delay: Duration) {
    let message = will_message(&slot.client_id, will);
    if delay.is_zero() {
        engine.publish_will(&slot.mountpoint, message);
    } else {
        engine.timers().publish_will(slot, message, delay);
    }
}
