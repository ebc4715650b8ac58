//! An application message as the router carries it, and one delivery of it to a subscriber.
//!
//! A published message is built once and shared (`Arc`) by every subscriber it goes to; its
//! payload is the `Bytes` slice of the publisher's read buffer, never copied.

use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;

use crate::hooks::{MatchedAcl, MessageInfo};
use crate::mqtt::{Properties, Publish, QoS};

/// A message in flight through the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic, without mountpoint.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// v5 properties forwarded to subscribers (payload format, content type, response topic,
    /// correlation data, user properties). Topic alias and subscription ids are per hop.
    pub properties: Properties,
    /// When the message expires (v5 message expiry interval), if it does.
    pub expires_at: Option<Instant>,
    /// The publishing client, for no-local.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// Builds the routed message from an inbound PUBLISH.
    pub fn from_publish(p: &Publish, topic: Arc<str>, publisher: Option<Arc<str>>) -> Message {
        let mut properties = p.properties.clone();
        if let Some(per_hop) = properties.present_mut() {
            per_hop.topic_alias = None;
            per_hop.subscription_identifiers.clear();
        }
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + std::time::Duration::from_secs(u64::from(s)));
        Message {
            topic,
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            publisher,
        }
    }

    /// Whether the message's expiry has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The expiry interval left, in whole seconds (rounded up), for forwarding.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|t| {
            let left = t.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// One message for one subscriber: the QoS and retain flag it gets, and the identifiers of
/// every subscription of that client it matched.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS of this delivery (min of published and granted).
    pub qos: QoS,
    /// Retain flag of this delivery.
    pub retain: bool,
    /// v5 subscription identifiers.
    pub subscription_ids: Vec<u32>,
    /// Whether it was queued while the session was offline.
    pub persisted: bool,
    /// The ACL that authorized the subscription, for events.
    pub acl: Option<Arc<MatchedAcl>>,
    /// Its position in the session's stored queue, when it was written to the store.
    pub stored: Option<u64>,
}

impl Delivery {
    /// The message as hooks see it: topic, payload, and this delivery's QoS and retain flag.
    pub fn info(&self) -> MessageInfo<'_> {
        MessageInfo {
            topic: &self.message.topic,
            payload: &self.message.payload,
            qos: self.qos,
            retain: self.retain,
            properties: &self.message.properties,
        }
    }
}
