//! Frames written straight from a hook's arguments, for the events that come once per message
//! (`on_publish`, `on_deliver`, `on_delivery_complete`, `on_offline_message`,
//! `on_message_drop`): no `eventssidecar.v1` struct is built, no string is copied before the
//! bytes land in the relay's backlog. The bytes are those prost writes for the same event
//! (fields in tag order, proto3 defaults left out); a test holds the two encoders to that.
//!
//! The other events (a client connecting, subscribing, going away) go through
//! [`super::encode::to_event`] and prost: they are rare, and that path is the reference.

use bytes::BytesMut;
use prost::encoding::{WireType, encoded_len_varint, key_len};
use vmq_sidecar_sdk::proto::Timestamp;

use crate::hooks::{ClientInfo, MatchedAcl, Notification};

/// Length of the frame header (`u32` big-endian body length).
const HEADER_LEN: usize = 4;

const ON_PUBLISH: &str = "type.googleapis.com/eventssidecar.v1.OnPublish";
const ON_DELIVER: &str = "type.googleapis.com/eventssidecar.v1.OnDeliver";
const ON_DELIVERY_COMPLETE: &str = "type.googleapis.com/eventssidecar.v1.OnDeliveryComplete";
const ON_OFFLINE_MESSAGE: &str = "type.googleapis.com/eventssidecar.v1.OnOfflineMessage";
const ON_MESSAGE_DROP: &str = "type.googleapis.com/eventssidecar.v1.OnMessageDrop";

/// One field of an event, borrowed from the hook's arguments.
#[derive(Clone, Copy, Debug)]
enum Field<'a> {
    /// `string` or `bytes`: left out when empty.
    Bytes(u32, &'a [u8]),
    /// `int32`/`int64`/enum holding a non-negative value (or `int64` as two's complement):
    /// left out when 0.
    Varint(u32, u64),
    /// `bool`: left out when false.
    Bool(u32, bool),
    /// `google.protobuf.Timestamp`: always present.
    Timestamp(u32, &'a Timestamp),
    /// `eventssidecar.v1.MatchedACL`: present when known, even if empty.
    Acl(u32, Option<&'a MatchedAcl>),
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn timestamp_fields(t: &Timestamp) -> [Field<'static>; 2] {
    [
        Field::Varint(1, t.seconds as u64),
        Field::Varint(2, i64::from(t.nanos) as u64),
    ]
}

fn acl_fields(a: &MatchedAcl) -> [Field<'_>; 2] {
    [
        Field::Bytes(1, a.name.as_bytes()),
        Field::Bytes(2, a.pattern.as_bytes()),
    ]
}

fn fields_len(fields: &[Field<'_>]) -> usize {
    fields.iter().map(Field::len).sum()
}

fn put_fields(fields: &[Field<'_>], out: &mut Out<'_>) {
    for f in fields {
        f.put(out);
    }
}

/// Writes into a slice already sized to the frame (its length is computed first): plain
/// stores, where `BufMut` on a `BytesMut` makes a capacity-checked call per byte. Never panics:
/// a write past the end (a length computed wrong) is noticed and the frame refused.
struct Out<'a> {
    dst: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) {
        match self.dst.get_mut(self.at..self.at + b.len()) {
            Some(d) => {
                d.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }

    fn byte(&mut self, b: u8) {
        match self.dst.get_mut(self.at) {
            Some(d) => {
                *d = b;
                self.at += 1;
            }
            None => self.overflow = true,
        }
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    fn key(&mut self, tag: u32, wire: WireType) {
        self.varint(u64::from(tag << 3 | wire as u32));
    }
}

impl Field<'_> {
    fn len(&self) -> usize {
        match *self {
            Field::Bytes(tag, b) if !b.is_empty() => delimited_len(tag, b.len()),
            Field::Varint(tag, v) if v != 0 => key_len(tag) + encoded_len_varint(v),
            Field::Bool(tag, true) => key_len(tag) + 1,
            Field::Timestamp(tag, t) => delimited_len(tag, fields_len(&timestamp_fields(t))),
            Field::Acl(tag, Some(a)) => delimited_len(tag, fields_len(&acl_fields(a))),
            _ => 0,
        }
    }

    fn put(&self, out: &mut Out<'_>) {
        match *self {
            Field::Bytes(tag, b) if !b.is_empty() => {
                out.key(tag, WireType::LengthDelimited);
                out.varint(b.len() as u64);
                out.bytes(b);
            }
            Field::Varint(tag, v) if v != 0 => {
                out.key(tag, WireType::Varint);
                out.varint(v);
            }
            Field::Bool(tag, true) => {
                out.key(tag, WireType::Varint);
                out.byte(1);
            }
            Field::Timestamp(tag, t) => {
                let inner = timestamp_fields(t);
                out.key(tag, WireType::LengthDelimited);
                out.varint(fields_len(&inner) as u64);
                put_fields(&inner, out);
            }
            Field::Acl(tag, Some(a)) => {
                let inner = acl_fields(a);
                out.key(tag, WireType::LengthDelimited);
                out.varint(fields_len(&inner) as u64);
                put_fields(&inner, out);
            }
            _ => {}
        }
    }
}

/// An event ready to be written as one frame: its `Any` type URL and its fields in tag order.
#[derive(Debug)]
pub struct Frame<'a> {
    type_url: &'static str,
    fields: [Field<'a>; 11],
    count: usize,
    /// Length of the event's own encoding (the `Any`'s value), computed once.
    value_len: usize,
}

impl<'a> Frame<'a> {
    fn new(type_url: &'static str, fields: &[Field<'a>]) -> Frame<'a> {
        let mut all = [Field::Bytes(0, &[]); 11];
        all[..fields.len()].copy_from_slice(fields);
        Frame {
            type_url,
            fields: all,
            count: fields.len(),
            value_len: fields_len(fields),
        }
    }

    fn body_len(&self) -> usize {
        let value = self.value_len;
        delimited_len(1, self.type_url.len())
            + if value > 0 {
                delimited_len(2, value)
            } else {
                0
            }
    }

    /// Bytes the frame takes, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Appends the frame to `buf`: header, then the `Any` with the event in it. False (and
    /// nothing appended) if the computed length was wrong, which the tests say cannot happen.
    pub fn put(&self, buf: &mut BytesMut) -> bool {
        let len = self.len();
        let start = buf.len();
        buf.resize(start + len, 0);
        let mut out = Out {
            dst: &mut buf[start..],
            at: 0,
            overflow: false,
        };
        // Callers refuse bodies over the maximum frame length, which fits a u32.
        out.bytes(&(self.body_len() as u32).to_be_bytes());
        Field::Bytes(1, self.type_url.as_bytes()).put(&mut out);
        if self.value_len > 0 {
            out.key(2, WireType::LengthDelimited);
            out.varint(self.value_len as u64);
            put_fields(&self.fields[..self.count], &mut out);
        }
        let ok = !out.overflow && out.at == len;
        if !ok {
            buf.truncate(start);
        }
        ok
    }
}

fn username(c: &ClientInfo) -> &[u8] {
    c.username.as_deref().unwrap_or_default().as_bytes()
}

/// The frame of a per-message notification, or `None` for the events that go through prost.
pub fn direct<'a>(n: &Notification<'a>, timestamp: &'a Timestamp) -> Option<Frame<'a>> {
    Some(match *n {
        Notification::Publish {
            client,
            message,
            acl,
        } => Frame::new(
            ON_PUBLISH,
            &[
                Field::Timestamp(1, timestamp),
                Field::Bytes(2, username(client)),
                Field::Bytes(3, client.client_id.as_bytes()),
                Field::Bytes(4, client.mountpoint.as_bytes()),
                Field::Varint(5, message.qos as u64),
                Field::Bytes(6, message.topic.as_bytes()),
                Field::Bytes(7, message.payload.as_ref()),
                Field::Bool(8, message.retain),
                Field::Acl(9, acl),
                Field::Bytes(10, client.session_id.as_bytes()),
            ],
        ),
        Notification::Deliver {
            client,
            message,
            persisted,
            acl,
        }
        | Notification::DeliveryComplete {
            client,
            message,
            persisted,
            acl,
        } => Frame::new(
            if matches!(n, Notification::Deliver { .. }) {
                ON_DELIVER
            } else {
                ON_DELIVERY_COMPLETE
            },
            &[
                Field::Timestamp(1, timestamp),
                Field::Bytes(2, username(client)),
                Field::Bytes(3, client.client_id.as_bytes()),
                Field::Bytes(4, client.mountpoint.as_bytes()),
                Field::Bytes(5, message.topic.as_bytes()),
                Field::Varint(6, message.qos as u64),
                Field::Bool(7, message.retain),
                Field::Bytes(8, message.payload.as_ref()),
                Field::Acl(9, acl),
                Field::Bool(10, persisted),
                Field::Bytes(11, client.session_id.as_bytes()),
            ],
        ),
        Notification::OfflineMessage {
            mountpoint,
            client_id,
            session_id,
            message,
        } => Frame::new(
            ON_OFFLINE_MESSAGE,
            &[
                Field::Timestamp(1, timestamp),
                Field::Bytes(2, client_id.as_bytes()),
                Field::Bytes(3, mountpoint.as_bytes()),
                Field::Varint(4, message.qos as u64),
                Field::Bytes(5, message.topic.as_bytes()),
                Field::Bytes(6, message.payload.as_ref()),
                Field::Bool(7, message.retain),
                Field::Bytes(8, session_id.as_bytes()),
            ],
        ),
        Notification::MessageDrop {
            mountpoint,
            client_id,
            session_id,
            message,
            reason,
            acl,
        } => Frame::new(
            ON_MESSAGE_DROP,
            &[
                Field::Timestamp(1, timestamp),
                Field::Bytes(2, client_id.as_bytes()),
                Field::Bytes(3, mountpoint.as_bytes()),
                Field::Varint(4, message.qos as u64),
                Field::Bytes(5, message.topic.as_bytes()),
                Field::Bytes(6, message.payload.as_ref()),
                Field::Bytes(7, reason.as_bytes()),
                Field::Acl(8, acl),
                Field::Bytes(9, session_id.as_bytes()),
            ],
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};
    use vmq_sidecar_sdk::EventCodec;

    use super::*;
    use crate::hooks::{ClientInfo, MessageInfo};
    use crate::mqtt::{Properties, Protocol, QoS};
    use crate::plugins::events_sidecar::encode::to_event;

    fn client(mountpoint: &str, client_id: &str, username: Option<String>) -> ClientInfo {
        ClientInfo {
            mountpoint: mountpoint.to_owned(),
            client_id: client_id.into(),
            username,
            peer: "127.0.0.1:5000".parse().unwrap(),
            session_id: Arc::from("3f0d2c1e-7b7a-4a8e-9a57-0c2b1d9e8f10"),
            protocol: Protocol::V311,
        }
    }

    /// The direct frame, and prost's frame of the same event: byte for byte the same, and the
    /// SDK decodes it back to the same event.
    fn check(n: &Notification<'_>, timestamp: Timestamp) {
        let frame = direct(n, &timestamp).expect("a per-message event");
        let mut ours = BytesMut::new();
        assert!(frame.put(&mut ours));
        assert_eq!(ours.len(), frame.len());
        let event = to_event(n, timestamp);
        let mut reference = BytesMut::new();
        EventCodec::new().encode(&event, &mut reference).unwrap();
        assert_eq!(ours, reference, "{event:?}");
        let decoded = EventCodec::new().decode(&mut ours).unwrap().unwrap();
        assert_eq!(decoded, event);
    }

    fn qos(q: u8) -> QoS {
        match q % 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    proptest! {
        #[test]
        fn per_message_events_match_prost(
            mountpoint in "[a-z]{0,4}",
            client_id in "\\PC{0,24}",
            username in proptest::option::of("\\PC{0,12}"),
            topic in "[a-z/é]{0,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            q in 0u8..3,
            retain: bool,
            persisted: bool,
            acl in proptest::option::of(("[a-z]{0,8}", "[a-z/#+%]{0,12}")),
            seconds in any::<i64>(),
            nanos in 0i32..1_000_000_000,
        ) {
            let c = client(&mountpoint, &client_id, username);
            let payload = Bytes::from(payload);
            let properties = Properties::default();
            let message = MessageInfo { topic: &topic, payload: &payload, qos: qos(q), retain, properties: &properties };
            let acl = acl.map(|(name, pattern)| MatchedAcl { name, pattern });
            let acl = acl.as_ref();
            let timestamp = Timestamp { seconds, nanos };
            check(&Notification::Publish { client: &c, message, acl }, timestamp);
            check(&Notification::Deliver { client: &c, message, persisted, acl }, timestamp);
            check(&Notification::DeliveryComplete { client: &c, message, persisted, acl }, timestamp);
            check(&Notification::OfflineMessage {
                mountpoint: &mountpoint, client_id: &client_id, session_id: &c.session_id, message,
            }, timestamp);
            check(&Notification::MessageDrop {
                mountpoint: &mountpoint, client_id: &client_id, session_id: &c.session_id, message,
                reason: "queue_full", acl,
            }, timestamp);
        }
    }

    #[test]
    fn other_events_go_through_prost() {
        let c = client("", "c", None);
        let ts = Timestamp::default();
        assert!(direct(&Notification::ClientWakeup { client: &c }, &ts).is_none());
        let unsubscribe = Notification::Unsubscribe {
            client: &c,
            topics: &[],
        };
        assert!(direct(&unsubscribe, &ts).is_none());
    }
}
