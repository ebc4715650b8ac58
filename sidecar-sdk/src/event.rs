//! [`Event`]: one typed value per relayed hook event, and its `google.protobuf.Any` packing.
//!
//! The wire carries a serialized `Any` per frame. Decoding goes straight from the frame's bytes to
//! the typed message without an intermediate `Any` allocation: the type URL is matched as bytes
//! and payloads are sliced out of the frame (`Bytes`), so a 4 KiB publish is never copied.

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use vmq_sidecar_proto::v1::*;
use vmq_sidecar_proto::{Any, Timestamp};

/// A serialized `google.protobuf.Any` seen as two byte strings, so decoding a frame allocates
/// neither a `String` for the type URL nor a `Vec` for the value.
#[derive(Clone, PartialEq, prost::Message)]
struct RawAny {
    #[prost(bytes = "bytes", tag = "1")]
    type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// Why an `Any` could not be turned into an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The bytes are not a serialized `google.protobuf.Any` (or its type URL is not UTF-8).
    #[error("not a google.protobuf.Any: {0}")]
    Any(#[source] prost::DecodeError),
    /// The `Any`'s type URL is not UTF-8 (protobuf strings must be).
    #[error("google.protobuf.Any type_url is not valid UTF-8")]
    TypeUrlNotUtf8,
    /// A `Batch` frame (at-least-once numbering) whose value does not decode.
    #[error("an eventssidecar.v1.Batch frame that does not decode")]
    BadBatch,
    /// The `Any` names a known event type but its value does not decode as that message.
    #[error("value of {type_url} does not decode: {source}")]
    Message {
        /// The type URL the `Any` carried.
        type_url: String,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
}

macro_rules! events {
    ($( $variant:ident => $hook:literal ),* $(,)?) => {
        /// One hook event as relayed by the broker: the typed message for every event type of the
        /// `eventssidecar.v1` contract, or [`Event::Unknown`] for a type URL this SDK does not
        /// know (a newer broker), so consumers keep running when the contract grows.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            $(
                #[doc = concat!("`", $hook, "`: see [`", stringify!($variant), "`].")]
                $variant($variant),
            )*
            /// An `Any` whose type URL is not one of the known events; kept as it came.
            Unknown {
                /// The `Any`'s type URL, verbatim.
                type_url: String,
                /// The `Any`'s serialized value, verbatim.
                value: Bytes,
            },
        }

        $(
            impl From<$variant> for Event {
                fn from(event: $variant) -> Self {
                    Event::$variant(event)
                }
            }
        )*

        impl Event {
            /// The hook name as VerneMQ spells it in config and metrics (`"on_publish"`, ...);
            /// `"unknown"` for [`Event::Unknown`].
            pub fn hook(&self) -> &'static str {
                match self {
                    $( Event::$variant(_) => $hook, )*
                    Event::Unknown { .. } => "unknown",
                }
            }

            /// The `Any` type URL this event is packed with,
            /// e.g. `type.googleapis.com/eventssidecar.v1.OnPublish`.
            pub fn type_url(&self) -> &str {
                match self {
                    $( Event::$variant(_) => concat!(
                        "type.googleapis.com/eventssidecar.v1.", stringify!($variant)), )*
                    Event::Unknown { type_url, .. } => type_url,
                }
            }

            /// Decodes the value of an `Any` given its type URL. Any domain is accepted before
            /// the last `/`, as the `Any` specification says; unknown names give
            /// [`Event::Unknown`].
            #[inline]
            pub fn decode_value(type_url: &str, value: Bytes) -> Result<Event, EventDecodeError> {
                Self::decode_value_bytes(type_url.as_bytes(), value)
            }

            /// [`Event::decode_value`] on the type URL's raw bytes: the hot path matches known
            /// names without UTF-8 validation or allocation.
            #[inline]
            fn decode_value_bytes(
                type_url: &[u8],
                value: Bytes,
            ) -> Result<Event, EventDecodeError> {
                let name = event_name(type_url);
                let wrap = |source| EventDecodeError::Message {
                    type_url: String::from_utf8_lossy(type_url).into_owned(),
                    source,
                };
                Ok(match name {
                    $( n if n == stringify!($variant).as_bytes() =>
                        Event::$variant($variant::decode(value).map_err(wrap)?), )*
                    _ => Event::Unknown {
                        type_url: String::from_utf8(type_url.to_vec())
                            .map_err(|_| EventDecodeError::TypeUrlNotUtf8)?,
                        value,
                    },
                })
            }

            /// Length of the serialized inner message (the `Any`'s value).
            fn value_len(&self) -> usize {
                match self {
                    $( Event::$variant(m) => m.encoded_len(), )*
                    Event::Unknown { value, .. } => value.len(),
                }
            }

            /// Serializes the inner message (the `Any`'s value) into `buf`.
            fn encode_value(&self, buf: &mut impl BufMut) {
                match self {
                    $( Event::$variant(m) => m.encode_raw(buf), )*
                    Event::Unknown { value, .. } => buf.put_slice(value),
                }
            }
        }

    };
}

/// The message name of an event type URL (`OnPublish` of
/// `type.googleapis.com/eventssidecar.v1.OnPublish`); any domain is accepted before the last `/`,
/// as the `Any` specification says. Empty when the package is not `eventssidecar.v1`.
#[inline]
pub(crate) fn event_name(type_url: &[u8]) -> &[u8] {
    match type_url.strip_prefix(b"type.googleapis.com/eventssidecar.v1.") {
        Some(name) => name,
        None => match type_url.iter().rposition(|&b| b == b'/') {
            Some(slash) => type_url[slash + 1..]
                .strip_prefix(b"eventssidecar.v1.")
                .unwrap_or(b""),
            None => b"",
        },
    }
}

/// Calls the [`crate::Handler`] method named after the event's hook.
pub(crate) async fn dispatch<H: crate::Handler + ?Sized>(
    handler: &H,
    peer: &crate::Peer,
    event: Event,
) {
    let (h, p) = (handler, peer);
    match event {
        Event::OnRegister(m) => h.on_register(p, m).await,
        Event::OnRegisterFailed(m) => h.on_register_failed(p, m).await,
        Event::OnPublish(m) => h.on_publish(p, m).await,
        Event::OnSubscribe(m) => h.on_subscribe(p, m).await,
        Event::OnUnsubscribe(m) => h.on_unsubscribe(p, m).await,
        Event::OnDeliver(m) => h.on_deliver(p, m).await,
        Event::OnDeliveryComplete(m) => h.on_delivery_complete(p, m).await,
        Event::OnOfflineMessage(m) => h.on_offline_message(p, m).await,
        Event::OnMessageDrop(m) => h.on_message_drop(p, m).await,
        Event::OnClientWakeUp(m) => h.on_client_wakeup(p, m).await,
        Event::OnClientOffline(m) => h.on_client_offline(p, m).await,
        Event::OnClientGone(m) => h.on_client_gone(p, m).await,
        Event::OnSessionExpired(m) => h.on_session_expired(p, m).await,
        unknown @ Event::Unknown { .. } => h.on_event(p, unknown).await,
    }
}

events! {
    OnRegister => "on_register",
    OnRegisterFailed => "on_register_failed",
    OnPublish => "on_publish",
    OnSubscribe => "on_subscribe",
    OnUnsubscribe => "on_unsubscribe",
    OnDeliver => "on_deliver",
    OnDeliveryComplete => "on_delivery_complete",
    OnOfflineMessage => "on_offline_message",
    OnMessageDrop => "on_message_drop",
    OnClientWakeUp => "on_client_wakeup",
    OnClientOffline => "on_client_offline",
    OnClientGone => "on_client_gone",
    OnSessionExpired => "on_session_expired",
}

/// Every hook name the contract defines, in the order of the design's table.
pub const HOOKS: [&str; 13] = [
    "on_register",
    "on_register_failed",
    "on_publish",
    "on_subscribe",
    "on_unsubscribe",
    "on_deliver",
    "on_delivery_complete",
    "on_offline_message",
    "on_message_drop",
    "on_client_wakeup",
    "on_client_offline",
    "on_client_gone",
    "on_session_expired",
];

/// Applies one expression to the typed message of every known variant.
macro_rules! each_known {
    ($self:expr, $m:ident => $body:expr, unknown => $unknown:expr) => {
        match $self {
            Event::OnRegister($m) => $body,
            Event::OnRegisterFailed($m) => $body,
            Event::OnPublish($m) => $body,
            Event::OnSubscribe($m) => $body,
            Event::OnUnsubscribe($m) => $body,
            Event::OnDeliver($m) => $body,
            Event::OnDeliveryComplete($m) => $body,
            Event::OnOfflineMessage($m) => $body,
            Event::OnMessageDrop($m) => $body,
            Event::OnClientWakeUp($m) => $body,
            Event::OnClientOffline($m) => $body,
            Event::OnClientGone($m) => $body,
            Event::OnSessionExpired($m) => $body,
            Event::Unknown { .. } => $unknown,
        }
    };
}

impl Event {
    /// The MQTT client id the event is about; `None` for [`Event::Unknown`].
    pub fn client_id(&self) -> Option<&str> {
        each_known!(self, m => Some(m.client_id.as_str()), unknown => None)
    }

    /// The mountpoint of the client's listener (`""` for the default one); `None` for
    /// [`Event::Unknown`].
    pub fn mountpoint(&self) -> Option<&str> {
        each_known!(self, m => Some(m.mountpoint.as_str()), unknown => None)
    }

    /// The wall-clock time at which the hook fired, if the event carries one.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        each_known!(self, m => m.timestamp.as_ref(), unknown => None)
    }

    /// The cluster node (its `nodename`) on which the hook ran: `""` from a single node (or an
    /// older broker); `None` for [`Event::Unknown`]. Each node relays its own hooks to its own
    /// sidecar, so one session's events may come from several nodes' sidecars.
    pub fn node(&self) -> Option<&str> {
        each_known!(self, m => Some(m.node.as_str()), unknown => None)
    }

    /// The MQTT session's id (a UUID per session, kept while a client resumes it, also on
    /// another cluster node). `None` for `OnRegisterFailed`
    /// (a refused connection has no session) and [`Event::Unknown`]; `Some("")` when an older
    /// broker did not fill it in.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Event::OnRegister(m) => Some(&m.session_id),
            Event::OnRegisterFailed(_) => None,
            Event::OnPublish(m) => Some(&m.session_id),
            Event::OnSubscribe(m) => Some(&m.session_id),
            Event::OnUnsubscribe(m) => Some(&m.session_id),
            Event::OnDeliver(m) => Some(&m.session_id),
            Event::OnDeliveryComplete(m) => Some(&m.session_id),
            Event::OnOfflineMessage(m) => Some(&m.session_id),
            Event::OnMessageDrop(m) => Some(&m.session_id),
            Event::OnClientWakeUp(m) => Some(&m.session_id),
            Event::OnClientOffline(m) => Some(&m.session_id),
            Event::OnClientGone(m) => Some(&m.session_id),
            Event::OnSessionExpired(m) => Some(&m.session_id),
            Event::Unknown { .. } => None,
        }
    }

    /// The username the client connected with, for the events that carry one.
    pub fn username(&self) -> Option<&str> {
        match self {
            Event::OnRegister(m) => Some(&m.username),
            Event::OnRegisterFailed(m) => Some(&m.username),
            Event::OnPublish(m) => Some(&m.username),
            Event::OnSubscribe(m) => Some(&m.username),
            Event::OnUnsubscribe(m) => Some(&m.username),
            Event::OnDeliver(m) => Some(&m.username),
            Event::OnDeliveryComplete(m) => Some(&m.username),
            Event::OnClientOffline(m) => Some(&m.username),
            Event::OnClientGone(m) => Some(&m.username),
            _ => None,
        }
    }

    /// Topic and payload for the events that carry a message (publish, deliver, delivery
    /// complete, offline message, message drop).
    pub fn message(&self) -> Option<(&str, &Bytes)> {
        match self {
            Event::OnPublish(m) => Some((&m.topic, &m.payload)),
            Event::OnDeliver(m) => Some((&m.topic, &m.payload)),
            Event::OnDeliveryComplete(m) => Some((&m.topic, &m.payload)),
            Event::OnOfflineMessage(m) => Some((&m.topic, &m.payload)),
            Event::OnMessageDrop(m) => Some((&m.topic, &m.payload)),
            _ => None,
        }
    }

    /// Decodes a serialized `google.protobuf.Any` (the body of one frame). Payloads are slices
    /// of `any`, not copies.
    #[inline]
    pub fn decode_any(any: Bytes) -> Result<Event, EventDecodeError> {
        let raw = RawAny::decode(any).map_err(EventDecodeError::Any)?;
        Event::decode_value_bytes(&raw.type_url, raw.value)
    }

    /// Unpacks a `prost_types::Any`.
    pub fn from_any(any: &Any) -> Result<Event, EventDecodeError> {
        Event::decode_value(&any.type_url, Bytes::copy_from_slice(&any.value))
    }

    /// Packs the event into a `prost_types::Any`.
    pub fn to_any(&self) -> Any {
        let mut value = Vec::with_capacity(self.value_len());
        self.encode_value(&mut value);
        Any {
            type_url: self.type_url().to_owned(),
            value,
        }
    }

    /// Length of the event serialized as an `Any` (the frame body, without its length prefix).
    pub fn any_encoded_len(&self) -> usize {
        let url = self.type_url().len();
        let value = self.value_len();
        let mut len = 0;
        if url > 0 {
            len += key_len(1) + encoded_len_varint(url as u64) + url;
        }
        if value > 0 {
            len += key_len(2) + encoded_len_varint(value as u64) + value;
        }
        len
    }

    /// Serializes the event as an `Any` into `buf`, exactly as protobuf's canonical encoder
    /// would (empty fields omitted), without building an intermediate `Any`.
    pub fn encode_any(&self, buf: &mut impl BufMut) {
        let url = self.type_url();
        if !url.is_empty() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(url.len() as u64, buf);
            buf.put_slice(url.as_bytes());
        }
        let value = self.value_len();
        if value > 0 {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(value as u64, buf);
            self.encode_value(buf);
        }
    }

    /// The event serialized as an `Any`, as a new buffer.
    pub fn encode_any_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.any_encoded_len());
        self.encode_any(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::every_event;

    #[test]
    fn hooks_cover_every_variant_once() {
        let events = every_event();
        let hooks: Vec<_> = events.iter().map(Event::hook).collect();
        assert_eq!(hooks, HOOKS);
    }

    #[test]
    fn any_roundtrip_for_every_event() {
        for event in every_event() {
            let bytes = event.encode_any_to_vec();
            assert_eq!(bytes.len(), event.any_encoded_len());
            // Our hand-rolled Any encoding matches prost's canonical one.
            assert_eq!(bytes, event.to_any().encode_to_vec(), "{}", event.hook());
            assert_eq!(Event::decode_any(Bytes::from(bytes)).unwrap(), event);
            assert_eq!(Event::from_any(&event.to_any()).unwrap(), event);
        }
    }

    #[test]
    fn accessors() {
        for event in every_event() {
            assert_eq!(event.client_id(), Some("client-ü-1"), "{}", event.hook());
            assert_eq!(event.mountpoint(), Some("mp/1"));
            assert!(event.timestamp().is_some());
            match &event {
                Event::OnRegisterFailed(_) => assert_eq!(event.session_id(), None),
                _ => assert_eq!(
                    event.session_id(),
                    Some("2f1c9e5e-8d3b-4f7a-9c1d-1234567890ab")
                ),
            }
        }
        let unknown = Event::Unknown {
            type_url: "type.googleapis.com/x.Y".into(),
            value: Bytes::new(),
        };
        assert_eq!(unknown.client_id(), None);
        assert_eq!(unknown.hook(), "unknown");
    }

    #[test]
    fn unknown_type_is_kept_verbatim_and_reencodes_identically() {
        let any = Any {
            type_url: "type.googleapis.com/eventssidecar.v2.OnSomethingNew".into(),
            value: vec![0x0a, 0x01, 0x41],
        };
        let bytes = any.encode_to_vec();
        let event = Event::decode_any(Bytes::from(bytes.clone())).unwrap();
        assert!(matches!(&event, Event::Unknown { type_url, .. } if type_url == &any.type_url));
        assert_eq!(event.encode_any_to_vec(), bytes);
    }

    #[test]
    fn any_domain_is_accepted() {
        let event = every_event().remove(2);
        let mut any = event.to_any();
        any.type_url = "example.com/types/eventssidecar.v1.OnPublish".into();
        assert_eq!(Event::from_any(&any).unwrap(), event);
    }

    #[test]
    fn bad_inner_message_is_an_error_naming_the_type() {
        let any = Any {
            type_url: "type.googleapis.com/eventssidecar.v1.OnPublish".into(),
            value: vec![0x0a, 0xff],
        };
        let err = Event::from_any(&any).unwrap_err();
        assert!(
            err.to_string().contains("eventssidecar.v1.OnPublish"),
            "{err}"
        );
    }
}
