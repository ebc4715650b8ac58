//! Sample events with every field set, for tests of the SDK and of sidecars built on it.
//!
//! The same values are written out in `tests/python/interop.py`, which builds them with Python's
//! official protobuf runtime: the two must agree field for field, which is what proves that a
//! sidecar in another language (or real VerneMQ) and this SDK understand each other.

use bytes::Bytes;
use vmq_sidecar_proto::Timestamp;
use vmq_sidecar_proto::v1::*;

use crate::Event;

/// Client id used by every sample event (non-ASCII on purpose).
pub const CLIENT_ID: &str = "client-ü-1";
/// Mountpoint used by every sample event.
pub const MOUNTPOINT: &str = "mp/1";
/// Session id used by every sample event that has one.
pub const SESSION_ID: &str = "2f1c9e5e-8d3b-4f7a-9c1d-1234567890ab";
/// Username used by every sample event that has one.
pub const USERNAME: &str = "user-1";
/// The node of every event of [`every_event`].
pub const NODE: &str = "n1@10.0.0.1";
/// Topic used by the sample events that carry a message.
pub const TOPIC: &str = "a/b/ü";
/// Payload of the sample events that carry a message: binary, not UTF-8.
pub const PAYLOAD: &[u8] = b"\x00\x01\xfepayload\xff";

fn ts(i: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: 1_700_000_000 + i,
        nanos: 123_456_789,
    })
}

fn acl() -> Option<MatchedAcl> {
    Some(MatchedAcl {
        name: "acl-1".into(),
        pattern: "a/+/#".into(),
    })
}

/// One event of each of the 13 types, in the order of [`crate::HOOKS`], every field set to a
/// value other than its default.
pub fn every_event() -> Vec<Event> {
    let payload = Bytes::from_static(PAYLOAD);
    let s = |v: &str| v.to_owned();
    vec![
        OnRegister {
            timestamp: ts(0),
            peer_addr: s("127.0.0.1"),
            peer_port: 54321,
            username: s(USERNAME),
            mountpoint: s(MOUNTPOINT),
            client_id: s(CLIENT_ID),
            user_properties: [("k1", "v1"), ("ключ", "значение")]
                .into_iter()
                .map(|(k, v)| (s(k), s(v)))
                .collect(),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnRegisterFailed {
            timestamp: ts(1),
            mountpoint: s(MOUNTPOINT),
            client_id: s(CLIENT_ID),
            peer_addr: s("127.0.0.1"),
            peer_port: 54321,
            username: s(USERNAME),
            clean_session: true,
            reason: RegistrationFailureReason::InvalidCredentials as i32,
            node: s(NODE),
        }
        .into(),
        OnPublish {
            timestamp: ts(2),
            username: s(USERNAME),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            qos: 1,
            topic: s(TOPIC),
            payload: payload.clone(),
            retain: true,
            matched_acl: acl(),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnSubscribe {
            timestamp: ts(3),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            username: s(USERNAME),
            topics: vec![
                TopicInfo {
                    topic: s("a/+/c"),
                    qos: 1,
                    matched_acl: acl(),
                },
                TopicInfo {
                    topic: s("$share/g/x/#"),
                    qos: 128,
                    matched_acl: acl(),
                },
            ],
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnUnsubscribe {
            timestamp: ts(4),
            username: s(USERNAME),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            topics: vec![s("a/+/c"), s("x/#")],
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnDeliver {
            timestamp: ts(5),
            username: s(USERNAME),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            topic: s(TOPIC),
            qos: 2,
            is_retain: true,
            payload: payload.clone(),
            matched_acl: acl(),
            persisted: true,
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnDeliveryComplete {
            timestamp: ts(6),
            username: s(USERNAME),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            topic: s(TOPIC),
            qos: 1,
            is_retain: true,
            payload: payload.clone(),
            matched_acl: acl(),
            persisted: true,
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnOfflineMessage {
            timestamp: ts(7),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            qos: 2,
            topic: s(TOPIC),
            payload: payload.clone(),
            retain: true,
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnMessageDrop {
            timestamp: ts(8),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            qos: 1,
            topic: s(TOPIC),
            payload,
            reason: s("queue_full"),
            matched_acl: acl(),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnClientWakeUp {
            timestamp: ts(9),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnClientOffline {
            timestamp: ts(10),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            reason: Reason::SessionTakenOver as i32,
            username: s(USERNAME),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnClientGone {
            timestamp: ts(11),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            reason: Reason::TcpClosed as i32,
            username: s(USERNAME),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
        OnSessionExpired {
            timestamp: ts(12),
            client_id: s(CLIENT_ID),
            mountpoint: s(MOUNTPOINT),
            session_id: s(SESSION_ID),
            node: s(NODE),
        }
        .into(),
    ]
}

/// An `OnPublish` with a payload of `size` bytes, as the broker emits for a typical message.
pub fn publish(size: usize) -> Event {
    OnPublish {
        timestamp: ts(0),
        username: USERNAME.into(),
        client_id: "sensor-00042".into(),
        mountpoint: String::new(),
        qos: 1,
        topic: "factory/line-3/sensor-00042/temperature".into(),
        payload: Bytes::from(vec![0x5a; size]),
        retain: false,
        matched_acl: acl(),
        session_id: SESSION_ID.into(),
        node: String::new(),
    }
    .into()
}

/// The `Batch` frame (header included) a broker in at-least-once mode writes before `count`
/// event frames numbered from `first_seq`: for tests of sidecars in that mode.
pub fn batch_frame(epoch: u64, lane: u32, first_seq: u64, count: u32, resent: bool) -> Vec<u8> {
    use prost::Message;
    let any = vmq_sidecar_proto::Any {
        type_url: crate::BATCH_TYPE_URL.into(),
        value: Batch {
            epoch,
            lane,
            first_seq,
            count,
            resent,
        }
        .encode_to_vec(),
    };
    let mut frame = (any.encoded_len() as u32).to_be_bytes().to_vec();
    frame.extend(any.encode_to_vec());
    frame
}
