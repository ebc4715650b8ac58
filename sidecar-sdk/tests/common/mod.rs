//! Strategies shared by the SDK's property tests.

use bytes::Bytes;
use proptest::prelude::*;
use vmq_sidecar_sdk::Event;
use vmq_sidecar_sdk::testing::every_event;

/// Events of every type with a varied client id (or another string), payload and QoS.
pub fn event_strategy() -> impl Strategy<Value = Event> {
    (
        0..13usize,
        "[a-zA-Z0-9ü/+#-]{0,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
        0..3i32,
    )
        .prop_map(|(i, client_id, payload, qos)| {
            let mut e = every_event().remove(i);
            let payload = Bytes::from(payload);
            match &mut e {
                Event::OnRegister(m) => m.client_id = client_id,
                Event::OnRegisterFailed(m) => m.client_id = client_id,
                Event::OnPublish(m) => (m.client_id, m.payload, m.qos) = (client_id, payload, qos),
                Event::OnSubscribe(m) => m.client_id = client_id,
                Event::OnUnsubscribe(m) => m.topics.push(client_id),
                Event::OnDeliver(m) => (m.client_id, m.payload, m.qos) = (client_id, payload, qos),
                Event::OnDeliveryComplete(m) => (m.topic, m.payload) = (client_id, payload),
                Event::OnOfflineMessage(m) => (m.topic, m.payload) = (client_id, payload),
                Event::OnMessageDrop(m) => (m.reason, m.payload) = (client_id, payload),
                Event::OnClientWakeUp(m) => m.client_id = client_id,
                Event::OnClientOffline(m) => m.client_id = client_id,
                Event::OnClientGone(m) => m.username = client_id,
                Event::OnSessionExpired(m) => m.mountpoint = client_id,
                Event::Unknown { .. } => unreachable!(),
            }
            e
        })
}
