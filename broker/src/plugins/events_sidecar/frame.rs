//! Frames written straight from a hook's arguments, for the events that come once per message
//! (`on_publish`, `on_deliver`, `on_delivery_complete`, `on_offline_message`,
//! `on_message_drop`): no `eventssidecar.v1` struct is built, no string is copied before the
//! bytes land in the relay's backlog. The bytes are those prost writes for the same event
//! (fields in tag order, proto3 defaults left out); a test holds the two encoders to that.
//!
//! Each event's fields are listed once ([`fields`]) and walked twice through [`Sink`]: by
//! [`Measure`] for the lengths, then by [`Write`] for the bytes. Both walks compile to
//! straight-line code per event type: no field table is built, nothing is computed twice.
//!
//! The other events (a client connecting, subscribing, going away) go through
//! [`super::encode::to_event`] and prost: they are rare, and that path is the reference.

use bytes::BytesMut;
use prost::encoding::{WireType, encoded_len_varint};
use vmq_sidecar_sdk::proto::Timestamp;

use crate::hooks::{ClientInfo, MatchedAcl, MessageInfo, Notification};

/// Length of the frame header (`u32` big-endian body length).
const HEADER_LEN: usize = 4;

const ON_PUBLISH: &str = "type.googleapis.com/eventssidecar.v1.OnPublish";
const ON_DELIVER: &str = "type.googleapis.com/eventssidecar.v1.OnDeliver";
const ON_DELIVERY_COMPLETE: &str = "type.googleapis.com/eventssidecar.v1.OnDeliveryComplete";
const ON_OFFLINE_MESSAGE: &str = "type.googleapis.com/eventssidecar.v1.OnOfflineMessage";
const ON_MESSAGE_DROP: &str = "type.googleapis.com/eventssidecar.v1.OnMessageDrop";

/// Where an event's fields go, in tag order. Every tag of these messages is below 16, so a
/// field key is one byte.
trait Sink {
    /// `string` or `bytes`: left out when empty.
    fn bytes(&mut self, tag: u8, b: &[u8]);
    /// `int32`/enum holding a non-negative value: left out when 0.
    fn varint(&mut self, tag: u8, v: u64);
    /// `bool`: left out when false.
    fn boolean(&mut self, tag: u8, b: bool) {
        if b {
            self.varint(tag, 1);
        }
    }
    /// `google.protobuf.Timestamp` (always present) or `eventssidecar.v1.MatchedACL` (present
    /// when known, even if empty): a nested message of `len` bytes, written by `inner`.
    fn message(&mut self, tag: u8, len: usize, inner: impl FnOnce(&mut Self));
}

fn key(tag: u8, wire: WireType) -> u8 {
    tag << 3 | wire as u8
}

fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Adds up the encoded length.
struct Measure(usize);

impl Sink for Measure {
    #[inline(always)]
    fn bytes(&mut self, _: u8, b: &[u8]) {
        if !b.is_empty() {
            self.0 += delimited_len(b.len());
        }
    }
    #[inline(always)]
    fn varint(&mut self, _: u8, v: u64) {
        if v != 0 {
            self.0 += 1 + encoded_len_varint(v);
        }
    }
    #[inline(always)]
    fn message(&mut self, _: u8, len: usize, _: impl FnOnce(&mut Self)) {
        self.0 += delimited_len(len);
    }
}

/// Writes into a slice already sized to the frame (its length is measured first): plain
/// stores, where `BufMut` on a `BytesMut` makes a capacity-checked call per byte. Never panics:
/// a write past the end (a length measured wrong) is noticed and the frame refused.
struct Write<'a> {
    dst: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl Write<'_> {
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        match self.dst.get_mut(self.at..self.at + b.len()) {
            Some(d) => {
                d.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        match self.dst.get_mut(self.at) {
            Some(d) => {
                *d = b;
                self.at += 1;
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }
}

impl Sink for Write<'_> {
    #[inline(always)]
    fn bytes(&mut self, tag: u8, b: &[u8]) {
        if !b.is_empty() {
            self.byte(key(tag, WireType::LengthDelimited));
            self.raw_varint(b.len() as u64);
            self.raw(b);
        }
    }
    #[inline(always)]
    fn varint(&mut self, tag: u8, v: u64) {
        if v != 0 {
            self.byte(key(tag, WireType::Varint));
            self.raw_varint(v);
        }
    }
    #[inline(always)]
    fn message(&mut self, tag: u8, len: usize, inner: impl FnOnce(&mut Self)) {
        self.byte(key(tag, WireType::LengthDelimited));
        self.raw_varint(len as u64);
        inner(self);
    }
}

fn timestamp<S: Sink>(s: &mut S, tag: u8, t: &Timestamp) {
    let (seconds, nanos) = (t.seconds as u64, i64::from(t.nanos) as u64);
    let varint_len = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
    s.message(tag, varint_len(seconds) + varint_len(nanos), |s| {
        s.varint(1, seconds);
        s.varint(2, nanos);
    });
}

fn acl<S: Sink>(s: &mut S, tag: u8, acl: Option<&MatchedAcl>) {
    if let Some(a) = acl {
        let len = |b: &str| {
            if b.is_empty() {
                0
            } else {
                delimited_len(b.len())
            }
        };
        s.message(tag, len(&a.name) + len(&a.pattern), |s| {
            s.bytes(1, a.name.as_bytes());
            s.bytes(2, a.pattern.as_bytes());
        });
    }
}

fn username(c: &ClientInfo) -> &[u8] {
    c.username.as_deref().unwrap_or_default().as_bytes()
}

/// The type URL of a per-message notification, `None` for the events that go through prost.
fn type_url(n: &Notification<'_>) -> Option<&'static str> {
    Some(match n {
        Notification::Publish { .. } => ON_PUBLISH,
        Notification::Deliver { .. } => ON_DELIVER,
        Notification::DeliveryComplete { .. } => ON_DELIVERY_COMPLETE,
        Notification::OfflineMessage { .. } => ON_OFFLINE_MESSAGE,
        Notification::MessageDrop { .. } => ON_MESSAGE_DROP,
        _ => return None,
    })
}

/// The fields of a per-message event, in tag order (the `.proto` files' numbering).
#[inline(always)]
fn fields<S: Sink>(s: &mut S, n: &Notification<'_>, ts: &Timestamp, node: &str) {
    let qos = |m: &MessageInfo<'_>| m.qos as u64;
    match *n {
        Notification::Publish {
            client,
            message: m,
            acl: a,
        } => {
            timestamp(s, 1, ts);
            s.bytes(2, username(client));
            s.bytes(3, client.client_id.as_bytes());
            s.bytes(4, client.mountpoint.as_bytes());
            s.varint(5, qos(&m));
            s.bytes(6, m.topic.as_bytes());
            s.bytes(7, m.payload);
            s.boolean(8, m.retain);
            acl(s, 9, a);
            s.bytes(10, client.session_id.as_bytes());
            s.bytes(11, node.as_bytes());
        }
        Notification::Deliver {
            client,
            message: m,
            persisted,
            acl: a,
        }
        | Notification::DeliveryComplete {
            client,
            message: m,
            persisted,
            acl: a,
        } => {
            timestamp(s, 1, ts);
            s.bytes(2, username(client));
            s.bytes(3, client.client_id.as_bytes());
            s.bytes(4, client.mountpoint.as_bytes());
            s.bytes(5, m.topic.as_bytes());
            s.varint(6, qos(&m));
            s.boolean(7, m.retain);
            s.bytes(8, m.payload);
            acl(s, 9, a);
            s.boolean(10, persisted);
            s.bytes(11, client.session_id.as_bytes());
            s.bytes(12, node.as_bytes());
        }
        Notification::OfflineMessage {
            mountpoint,
            client_id,
            session_id,
            message: m,
        } => {
            timestamp(s, 1, ts);
            s.bytes(2, client_id.as_bytes());
            s.bytes(3, mountpoint.as_bytes());
            s.varint(4, qos(&m));
            s.bytes(5, m.topic.as_bytes());
            s.bytes(6, m.payload);
            s.boolean(7, m.retain);
            s.bytes(8, session_id.as_bytes());
            s.bytes(9, node.as_bytes());
        }
        Notification::MessageDrop {
            mountpoint,
            client_id,
            session_id,
            message: m,
            reason,
            acl: a,
        } => {
            timestamp(s, 1, ts);
            s.bytes(2, client_id.as_bytes());
            s.bytes(3, mountpoint.as_bytes());
            s.varint(4, qos(&m));
            s.bytes(5, m.topic.as_bytes());
            s.bytes(6, m.payload);
            s.bytes(7, reason.as_bytes());
            acl(s, 8, a);
            s.bytes(9, session_id.as_bytes());
            s.bytes(10, node.as_bytes());
        }
        _ => {}
    }
}

/// Appends the frame of a per-message notification to `buf`: header, then the `Any` with the
/// event in it. `None` for the events that go through prost; `Some(false)` (nothing appended)
/// when the body would be over `max_body` bytes, or if a length was measured wrong, which the
/// tests say cannot happen.
pub fn put_direct(
    n: &Notification<'_>,
    timestamp: &Timestamp,
    node: &str,
    buf: &mut BytesMut,
    max_body: usize,
) -> Option<bool> {
    let type_url = type_url(n)?;
    let mut value = Measure(0);
    fields(&mut value, n, timestamp, node);
    let value_len = value.0;
    let body_len = delimited_len(type_url.len())
        + if value_len > 0 {
            delimited_len(value_len)
        } else {
            0
        };
    let Ok(header) = u32::try_from(body_len) else {
        return Some(false);
    };
    if body_len > max_body {
        return Some(false);
    }
    let len = HEADER_LEN + body_len;
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut out = Write {
        dst: &mut buf[start..],
        at: 0,
        overflow: false,
    };
    out.raw(&header.to_be_bytes());
    out.bytes(1, type_url.as_bytes());
    if value_len > 0 {
        out.byte(key(2, WireType::LengthDelimited));
        out.raw_varint(value_len as u64);
        fields(&mut out, n, timestamp, node);
    }
    let ok = !out.overflow && out.at == len;
    if !ok {
        buf.truncate(start);
    }
    Some(ok)
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
    fn check(n: &Notification<'_>, timestamp: Timestamp, node: &str) {
        let mut ours = BytesMut::new();
        assert_eq!(
            put_direct(n, &timestamp, node, &mut ours, usize::MAX),
            Some(true)
        );
        let event = to_event(n, timestamp, node);
        assert_eq!(event.node(), Some(node));
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
            node in prop_oneof![Just(String::new()), "[a-z0-9@.]{1,20}"],
        ) {
            let c = client(&mountpoint, &client_id, username);
            let payload = Bytes::from(payload);
            let properties = Properties::default();
            let message = MessageInfo { topic: &topic, payload: &payload, qos: qos(q), retain, properties: &properties };
            let acl = acl.map(|(name, pattern)| MatchedAcl { name, pattern });
            let acl = acl.as_ref();
            let timestamp = Timestamp { seconds, nanos };
            check(&Notification::Publish { client: &c, message, acl }, timestamp, &node);
            check(&Notification::Deliver { client: &c, message, persisted, acl }, timestamp, &node);
            check(&Notification::DeliveryComplete { client: &c, message, persisted, acl }, timestamp, &node);
            check(&Notification::OfflineMessage {
                mountpoint: &mountpoint, client_id: &client_id, session_id: &c.session_id, message,
            }, timestamp, &node);
            check(&Notification::MessageDrop {
                mountpoint: &mountpoint, client_id: &client_id, session_id: &c.session_id, message,
                reason: "queue_full", acl,
            }, timestamp, &node);
        }
    }

    #[test]
    fn other_events_go_through_prost() {
        let c = client("", "c", None);
        let ts = Timestamp::default();
        let mut buf = BytesMut::new();
        assert!(
            put_direct(
                &Notification::ClientWakeup { client: &c },
                &ts,
                "",
                &mut buf,
                1000
            )
            .is_none()
        );
        let unsubscribe = Notification::Unsubscribe {
            client: &c,
            topics: &[],
        };
        assert!(put_direct(&unsubscribe, &ts, "", &mut buf, 1000).is_none());
        assert!(buf.is_empty());
    }
}
