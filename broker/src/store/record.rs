//! How stored things are encoded: protobuf records (prost derive, no .proto file needed), so a
//! later version can add fields and still read an older store. MQTT v5 properties are kept in
//! their MQTT wire form, which our codec already reads and writes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use bytes::Bytes;
use prost::Message as _;

use super::SubRecord;
use super::{
    Op, Snapshot, StoreError, Write, queued_key_bytes, retained_key_bytes, session_key_bytes,
    take_str16, unix_ms,
};
use crate::hooks::MatchedAcl;
use crate::message::{Delivery, Message};
use crate::mqtt::PropertyContext;
use crate::mqtt::{Properties, QoS, SubOptions};

#[derive(Clone, PartialEq, prost::Message)]
struct SessionRecord {
    #[prost(message, repeated, tag = "1")]
    subscriptions: Vec<SubscriptionRecord>,
    /// Absent: the session never expires.
    #[prost(uint64, optional, tag = "2")]
    expiry_secs: Option<u64>,
    /// Absent: the client was online when this was written.
    #[prost(uint64, optional, tag = "3")]
    offline_since_ms: Option<u64>,
}

/// A subscription as stored, and as a session handed to another node carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SubscriptionRecord {
    #[prost(string, tag = "1")]
    filter: String,
    #[prost(uint32, tag = "2")]
    qos: u32,
    #[prost(bool, tag = "3")]
    no_local: bool,
    #[prost(bool, tag = "4")]
    retain_as_published: bool,
    #[prost(uint32, tag = "5")]
    retain_handling: u32,
    #[prost(uint32, optional, tag = "6")]
    id: Option<u32>,
    #[prost(message, optional, tag = "7")]
    acl: Option<AclRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AclRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    pattern: String,
}

/// A message as stored, and as it travels between cluster nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MessageRecord {
    #[prost(string, tag = "1")]
    topic: String,
    #[prost(bytes = "bytes", tag = "2")]
    payload: Bytes,
    #[prost(uint32, tag = "3")]
    qos: u32,
    #[prost(bool, tag = "4")]
    retain: bool,
    /// v5 properties in MQTT wire form (with their length prefix).
    #[prost(bytes = "bytes", tag = "5")]
    properties: Bytes,
    #[prost(uint64, optional, tag = "6")]
    expires_at_ms: Option<u64>,
    #[prost(string, optional, tag = "7")]
    publisher: Option<String>,
}

/// A queued delivery as stored, and as a session handed to another node carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QueuedRecord {
    #[prost(message, optional, tag = "1")]
    message: Option<MessageRecord>,
    #[prost(uint32, tag = "2")]
    qos: u32,
    #[prost(bool, tag = "3")]
    retain: bool,
    #[prost(uint32, repeated, tag = "4")]
    subscription_ids: Vec<u32>,
    #[prost(message, optional, tag = "5")]
    acl: Option<AclRecord>,
    #[prost(uint32, optional, tag = "6")]
    packet_id: Option<u32>,
    #[prost(bool, tag = "7")]
    released: bool,
}

/// A persistent session read back from the store.
#[derive(Debug)]
pub struct RestoredSession {
    /// Mountpoint.
    pub mountpoint: String,
    /// Client id.
    pub client_id: String,
    /// Subscriptions by filter.
    pub subscriptions: Vec<(String, SubRecord)>,
    /// Its expiry interval (`None`: never).
    pub expiry: Option<Duration>,
    /// Time left before it expires, counted from its client's departure (`None`: never;
    /// zero: already expired).
    pub expires_in: Option<Duration>,
    /// Its queue, in order.
    pub queue: Vec<RestoredQueued>,
}

/// A queued message read back from the store.
#[derive(Debug)]
pub struct RestoredQueued {
    /// Its position in the session's queue.
    pub seq: u64,
    /// The delivery (marked persisted).
    pub delivery: Delivery,
    /// The packet id it was in flight with (QoS 2).
    pub packet_id: Option<u16>,
    /// Whether PUBREL had been sent.
    pub released: bool,
}

fn acl_record(acl: Option<&Arc<MatchedAcl>>) -> Option<AclRecord> {
    acl.map(|a| AclRecord {
        name: a.name.clone(),
        pattern: a.pattern.clone(),
    })
}

fn acl_from(r: Option<AclRecord>) -> Option<Arc<MatchedAcl>> {
    r.map(|a| {
        Arc::new(MatchedAcl {
            name: a.name,
            pattern: a.pattern,
        })
    })
}

pub(crate) fn message_record(m: &Message, now: (SystemTime, Instant)) -> MessageRecord {
    let mut props = Vec::with_capacity(m.properties.wire_len());
    m.properties.encode(&mut props);
    MessageRecord {
        topic: m.topic.to_string(),
        payload: m.payload.clone(),
        qos: u32::from(m.qos as u8),
        retain: m.retain,
        properties: props.into(),
        expires_at_ms: m
            .expires_at
            .map(|t| unix_ms(now.0) + t.saturating_duration_since(now.1).as_millis() as u64),
        publisher: m.publisher.as_deref().map(str::to_owned),
    }
}

/// A subscription's record.
pub(crate) fn subscription_record(filter: String, s: &SubRecord) -> SubscriptionRecord {
    SubscriptionRecord {
        filter,
        qos: u32::from(s.options.qos as u8),
        no_local: s.options.no_local,
        retain_as_published: s.options.retain_as_published,
        retain_handling: u32::from(s.options.retain_handling),
        id: s.id,
        acl: acl_record(s.acl.as_ref()),
    }
}

/// A subscription back from its record.
pub(crate) fn subscription_from(s: SubscriptionRecord) -> Result<(String, SubRecord), String> {
    let qos = qos_from(s.qos)?;
    Ok((
        s.filter,
        SubRecord {
            options: SubOptions {
                qos,
                no_local: s.no_local,
                retain_as_published: s.retain_as_published,
                retain_handling: u8::try_from(s.retain_handling).unwrap_or(0),
            },
            id: s.id,
            acl: acl_from(s.acl),
        },
    ))
}

/// A delivery's record (not in flight: no packet id).
pub(crate) fn delivery_record(d: &Delivery, now: (SystemTime, Instant)) -> QueuedRecord {
    QueuedRecord {
        message: Some(message_record(&d.message, now)),
        qos: u32::from(d.qos as u8),
        retain: d.retain,
        subscription_ids: d.subscription_ids.clone(),
        acl: acl_record(d.acl.as_ref()),
        packet_id: None,
        released: false,
    }
}

/// A delivery back from its record (not marked stored).
pub(crate) fn delivery_from(
    r: QueuedRecord,
    now: (SystemTime, Instant),
) -> Result<Delivery, String> {
    let message = message_from(r.message.ok_or("no message")?, now)?;
    Ok(Delivery {
        message: Arc::new(message),
        qos: qos_from(r.qos)?,
        retain: r.retain,
        subscription_ids: r.subscription_ids,
        persisted: false,
        acl: acl_from(r.acl),
        stored: None,
    })
}

/// Encodes one operation into the writes that apply it.
pub(super) fn encode_op(op: Op, now: (SystemTime, Instant), out: &mut Vec<Write>) {
    match op {
        Op::PutSession {
            key,
            subscriptions,
            expiry,
            offline_since,
        } => {
            let record = SessionRecord {
                subscriptions: subscriptions
                    .into_iter()
                    .map(|(filter, s)| subscription_record(filter, &s))
                    .collect(),
                expiry_secs: expiry.map(|d| d.as_secs()),
                offline_since_ms: offline_since.map(unix_ms),
            };
            out.push(Write::PutSession(
                session_key_bytes(&key.mountpoint, &key.client_id),
                record.encode_to_vec(),
            ));
        }
        Op::DeleteSession(key) => out.push(Write::DeleteSession(session_key_bytes(
            &key.mountpoint,
            &key.client_id,
        ))),
        Op::PutQueued {
            key,
            seq,
            delivery,
            packet_id,
            released,
        } => {
            let record = QueuedRecord {
                packet_id: packet_id.map(u32::from),
                released,
                ..delivery_record(&delivery, now)
            };
            let session = session_key_bytes(&key.mountpoint, &key.client_id);
            out.push(Write::PutQueued(
                queued_key_bytes(&session, seq),
                record.encode_to_vec(),
            ));
        }
        Op::DeleteQueued { key, seq } => {
            let session = session_key_bytes(&key.mountpoint, &key.client_id);
            out.push(Write::DeleteQueued(queued_key_bytes(&session, seq)));
        }
        Op::PutRetained {
            mountpoint,
            topic,
            message,
        } => {
            let key = retained_key_bytes(&mountpoint, &topic);
            out.push(match message {
                Some(m) => Write::PutRetained(key, message_record(&m, now).encode_to_vec()),
                None => Write::DeleteRetained(key),
            });
        }
    }
}

fn readable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

fn qos_from(v: u32) -> Result<QoS, String> {
    u8::try_from(v)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("bad QoS {v}"))
}

pub(crate) fn message_from(
    r: MessageRecord,
    now: (SystemTime, Instant),
) -> Result<Message, String> {
    let mut props = r.properties;
    let properties = if props.is_empty() {
        Properties::default()
    } else {
        Properties::decode(&mut props, PropertyContext::Publish)
            .map_err(|e| format!("bad properties: {e}"))?
    };
    let now_ms = unix_ms(now.0);
    Ok(Message {
        topic: r.topic.into(),
        payload: r.payload,
        qos: qos_from(r.qos)?,
        retain: r.retain,
        properties,
        // An expiry too far to represent is no expiry (a damaged record must not panic).
        expires_at: r.expires_at_ms.and_then(|ms| {
            now.1
                .checked_add(Duration::from_millis(ms.saturating_sub(now_ms)))
        }),
        publisher: r.publisher.map(Into::into),
    })
}

/// Decodes everything read from a backend. A record that does not decode is an error naming
/// it: the broker refuses to start rather than silently lose or misread state.
pub(super) fn decode_snapshot(
    snapshot: Snapshot,
    wall: SystemTime,
    mono: Instant,
) -> Result<super::Recovered, StoreError> {
    let now = (wall, mono);
    let now_ms = unix_ms(wall);
    let corrupt = |table: &'static str, key: &[u8], message: String| StoreError::Corrupt {
        table,
        key: readable(key),
        message,
    };
    let mut sessions: Vec<(Vec<u8>, RestoredSession)> = Vec::new();
    for (key, value) in snapshot.sessions {
        let mut k = key.as_slice();
        let (Some(mountpoint), Some(client_id)) = (take_str16(&mut k), take_str16(&mut k)) else {
            return Err(corrupt("session", &key, "bad key".into()));
        };
        let r = SessionRecord::decode(value.as_slice())
            .map_err(|e| corrupt("session", &key, e.to_string()))?;
        let mut subscriptions = Vec::with_capacity(r.subscriptions.len());
        for s in r.subscriptions {
            subscriptions.push(subscription_from(s).map_err(|e| corrupt("session", &key, e))?);
        }
        let expiry = r.expiry_secs.map(Duration::from_secs);
        let expires_in = expiry.map(|e| match r.offline_since_ms {
            Some(since) => {
                let gone = Duration::from_millis(now_ms.saturating_sub(since));
                e.saturating_sub(gone)
            }
            // It was online when the broker stopped: it went offline now.
            None => e,
        });
        let (mountpoint, client_id) = (mountpoint.to_owned(), client_id.to_owned());
        sessions.push((
            key,
            RestoredSession {
                mountpoint,
                client_id,
                subscriptions,
                expiry,
                expires_in,
                queue: Vec::new(),
            },
        ));
    }
    // Queue records sort by session key then sequence; sessions sort by key: one merge pass.
    let mut at = 0;
    for (key, value) in snapshot.queued {
        if key.len() < 8 {
            return Err(corrupt("queue", &key, "bad key".into()));
        }
        let (session, seq) = key.split_at(key.len() - 8);
        let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
        while at < sessions.len() && sessions[at].0.as_slice() < session {
            at += 1;
        }
        if at == sessions.len() || sessions[at].0.as_slice() != session {
            // A queue record without its session: the session was deleted in the same
            // transaction as its queue, so this cannot come from us.
            return Err(corrupt("queue", &key, "no session for this record".into()));
        }
        let r = QueuedRecord::decode(value.as_slice())
            .map_err(|e| corrupt("queue", &key, e.to_string()))?;
        let (packet_id, released) = (r.packet_id, r.released);
        let mut delivery = delivery_from(r, now).map_err(|e| corrupt("queue", &key, e))?;
        delivery.persisted = true;
        delivery.stored = Some(seq);
        sessions[at].1.queue.push(RestoredQueued {
            seq,
            delivery,
            packet_id: packet_id.and_then(|p| u16::try_from(p).ok()),
            released,
        });
    }
    let mut retained = Vec::with_capacity(snapshot.retained.len());
    for (key, value) in snapshot.retained {
        let mut k = key.as_slice();
        let Some(mountpoint) = take_str16(&mut k) else {
            return Err(corrupt("retained", &key, "bad key".into()));
        };
        let r = MessageRecord::decode(value.as_slice())
            .map_err(|e| corrupt("retained", &key, e.to_string()))?;
        let m = message_from(r, now).map_err(|e| corrupt("retained", &key, e))?;
        retained.push((mountpoint.to_owned(), m));
    }
    Ok(super::Recovered {
        sessions: sessions.into_iter().map(|(_, s)| s).collect(),
        retained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionKey;

    fn now() -> (SystemTime, Instant) {
        (SystemTime::now(), Instant::now())
    }

    fn message(topic: &str) -> Arc<Message> {
        let properties = Properties::from(crate::mqtt::PropertyFields {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        });
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties,
            expires_at: Some(Instant::now() + Duration::from_secs(3600)),
            publisher: Some("pub".into()),
        })
    }

    fn snapshot_of(writes: &[Write]) -> Snapshot {
        let mut b = crate::store::memory::MemoryBackend::default();
        crate::store::Backend::commit(&mut b, writes).unwrap();
        crate::store::Backend::load(&mut b).unwrap()
    }

    #[test]
    fn a_session_and_its_queue_round_trip() {
        let key = SessionKey {
            mountpoint: "mp".into(),
            client_id: "c1".into(),
        };
        let sub = SubRecord {
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
            id: Some(7),
            acl: Some(Arc::new(MatchedAcl {
                name: "label".into(),
                pattern: "a/#".into(),
            })),
        };
        let mut writes = Vec::new();
        encode_op(
            Op::PutSession {
                key: key.clone(),
                subscriptions: vec![("a/#".into(), sub)],
                expiry: Some(Duration::from_secs(100)),
                offline_since: Some(SystemTime::now() - Duration::from_secs(40)),
            },
            now(),
            &mut writes,
        );
        for seq in [2u64, 1, 300] {
            encode_op(
                Op::PutQueued {
                    key: key.clone(),
                    seq,
                    delivery: Delivery {
                        message: message(&format!("a/{seq}")),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_ids: vec![7],
                        persisted: false,
                        acl: None,
                        stored: Some(seq),
                    },
                    packet_id: (seq == 300).then_some(9),
                    released: seq == 300,
                },
                now(),
                &mut writes,
            );
        }
        let recovered = decode_snapshot(snapshot_of(&writes), SystemTime::now(), Instant::now())
            .expect("decodes");
        assert_eq!(recovered.sessions.len(), 1);
        let s = &recovered.sessions[0];
        assert_eq!((s.mountpoint.as_str(), s.client_id.as_str()), ("mp", "c1"));
        assert_eq!(s.subscriptions[0].0, "a/#");
        assert_eq!(s.subscriptions[0].1.options.retain_handling, 2);
        assert_eq!(s.subscriptions[0].1.id, Some(7));
        assert_eq!(s.subscriptions[0].1.acl.as_ref().unwrap().name, "label");
        let left = s.expires_in.unwrap();
        assert!(left <= Duration::from_secs(60) && left >= Duration::from_secs(55));
        let seqs: Vec<u64> = s.queue.iter().map(|q| q.seq).collect();
        assert_eq!(seqs, [1, 2, 300], "queue in sequence order");
        let q = &s.queue[2];
        assert_eq!((q.packet_id, q.released), (Some(9), true));
        let m = &q.delivery.message;
        assert_eq!(&*m.topic, "a/300");
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.properties.user_properties, [("k".into(), "v".into())]);
        assert!(m.expires_at.unwrap() > Instant::now() + Duration::from_secs(3590));
        assert!(q.delivery.persisted);
    }

    #[test]
    fn a_client_id_that_extends_another_does_not_take_its_queue() {
        let mut writes = Vec::new();
        for cid in ["c", "c\u{1}"] {
            let key = SessionKey {
                mountpoint: "".into(),
                client_id: cid.into(),
            };
            encode_op(
                Op::PutSession {
                    key: key.clone(),
                    subscriptions: vec![],
                    expiry: None,
                    offline_since: None,
                },
                now(),
                &mut writes,
            );
            encode_op(
                Op::PutQueued {
                    key,
                    seq: 1,
                    delivery: Delivery {
                        message: message(cid),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_ids: vec![],
                        persisted: false,
                        acl: None,
                        stored: Some(1),
                    },
                    packet_id: None,
                    released: false,
                },
                now(),
                &mut writes,
            );
        }
        writes.push(Write::DeleteSession(session_key_bytes("", "c")));
        let r = decode_snapshot(snapshot_of(&writes), SystemTime::now(), Instant::now()).unwrap();
        assert_eq!(r.sessions.len(), 1);
        assert_eq!(r.sessions[0].client_id, "c\u{1}");
        assert_eq!(r.sessions[0].queue.len(), 1);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let snapshot = Snapshot {
            sessions: vec![(session_key_bytes("", "x"), vec![0xff, 0xff, 0xff])],
            ..Snapshot::default()
        };
        let e = decode_snapshot(snapshot, SystemTime::now(), Instant::now()).unwrap_err();
        assert!(e.to_string().contains("corrupt session record"), "{e}");
    }
}
