//! [`EventView`]: an event borrowed from its frame. Making one allocates nothing: strings are
//! `&str` into the frame (UTF-8 checked, as protobuf requires), payloads `&[u8]`, repeated fields
//! are iterated lazily. It accepts exactly what the owned decoder ([`Event::decode_any`])
//! accepts (the same prost wire primitives decide) and converts to the owned [`Event`] with
//! [`EventView::to_event`] when a handler needs to keep it.
//!
//! This is the sidecar's hot path: a small `OnPublish` costs a fraction of the owned decode,
//! whose seven `String`s (allocation, copy, free) were most of a sidecar's CPU per event.

mod fields;

use bytes::Bytes;
use prost::DecodeError;
use prost::encoding::{DecodeContext, decode_key, skip_field};
use vmq_sidecar_proto::Timestamp;
use vmq_sidecar_proto::v1::*;

pub use fields::{Element, MatchedAclView, Repeated, RepeatedIter, TopicInfoView};
use fields::{Field, Source};

use crate::event::{Event, EventDecodeError, event_name};

macro_rules! views {
    ($a:lifetime; $( $owned:ident => $view:ident $hook:literal { $( $tag:literal $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            #[doc = concat!("[`", stringify!($owned), "`] borrowed from its frame; the fields \
                are the owned message's, as `&str`, `&[u8]` and lazy [`Repeated`] iterators.")]
            #[derive(Clone, Copy, Debug, Default, PartialEq)]
            pub struct $view<$a> {
                $(
                    #[doc = concat!("`", stringify!($field), "` (field ", stringify!($tag), ").")]
                    pub $field: $ty,
                )*
            }

            impl<$a> $view<$a> {
                /// Decodes the message's serialized bytes (an `Any`'s value).
                pub fn decode(mut buf: &$a [u8]) -> Result<Self, DecodeError> {
                    let mut view = Self::default();
                    $( Field::begin(&mut view.$field, buf, $tag); )*
                    let ctx = DecodeContext::default();
                    while !buf.is_empty() {
                        let (tag, wire) = decode_key(&mut buf)?;
                        match tag {
                            $( $tag => Field::merge(&mut view.$field, wire, &mut buf, ctx.clone())?, )*
                            _ => skip_field(wire, tag, &mut buf, ctx.clone())?,
                        }
                    }
                    Ok(view)
                }

                /// The owned message (strings copied, the payload copied).
                pub fn to_message(&self) -> $owned {
                    self.owned(Source(None))
                }

                fn owned(&self, src: Source<'_>) -> $owned {
                    $owned { $( $field: Field::owned(&self.$field, src), )* }
                }
            }
        )*

        /// One relayed event borrowed from its frame: the view of every event type of the
        /// `eventssidecar.v1` contract, or [`EventView::Unknown`] for a type this SDK does not
        /// know (a newer broker).
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum EventView<$a> {
            $(
                #[doc = concat!("See [`", stringify!($view), "`].")]
                $owned($view<$a>),
            )*
            /// An `Any` whose type URL is not one of the known events.
            Unknown {
                /// The `Any`'s type URL, verbatim.
                type_url: &$a str,
                /// The `Any`'s serialized value, verbatim.
                value: &$a [u8],
            },
        }

        /// The event types in the order of [`crate::HOOKS`].
        #[derive(Clone, Copy)]
        #[allow(clippy::enum_variant_names)]
        enum Kind { $( $owned, )* }

        impl<$a> EventView<$a> {
            /// The event's position in [`crate::HOOKS`] (a table index for per-hook counters);
            /// `None` for [`EventView::Unknown`].
            pub fn hook_index(&self) -> Option<usize> {
                match self {
                    $( EventView::$owned(_) => Some(Kind::$owned as usize), )*
                    EventView::Unknown { .. } => None,
                }
            }

            /// Decodes a serialized `google.protobuf.Any` (the body of one frame).
            #[inline]
            pub fn decode_any(any: &$a [u8]) -> Result<Self, EventDecodeError> {
                let (type_url, value) = split_any(any).map_err(EventDecodeError::Any)?;
                let wrap = |source| EventDecodeError::Message {
                    type_url: String::from_utf8_lossy(type_url).into_owned(),
                    source,
                };
                Ok(match event_name(type_url) {
                    $( n if n == stringify!($owned).as_bytes() =>
                        EventView::$owned($view::decode(value).map_err(wrap)?), )*
                    _ => EventView::Unknown {
                        type_url: std::str::from_utf8(type_url)
                            .map_err(|_| EventDecodeError::TypeUrlNotUtf8)?,
                        value,
                    },
                })
            }

            /// The owned event, its strings copied. Payloads are slices of `frame` when the view
            /// was decoded from it (no copy), copies otherwise.
            pub fn to_event_in(&self, frame: &Bytes) -> Event {
                self.owned(Source(Some(frame)))
            }

            /// The owned event, strings and payloads copied.
            pub fn to_event(&self) -> Event {
                self.owned(Source(None))
            }

            fn owned(&self, src: Source<'_>) -> Event {
                match self {
                    $( EventView::$owned(v) => Event::$owned(v.owned(src)), )*
                    EventView::Unknown { type_url, value } => Event::Unknown {
                        type_url: (*type_url).to_owned(),
                        value: src.bytes(value),
                    },
                }
            }

            /// The hook name as VerneMQ spells it (`"on_publish"`, ...); `"unknown"` for
            /// [`EventView::Unknown`].
            pub fn hook(&self) -> &'static str {
                match self {
                    $( EventView::$owned(_) => $hook, )*
                    EventView::Unknown { .. } => "unknown",
                }
            }

            /// The MQTT client id the event is about; `None` for [`EventView::Unknown`].
            pub fn client_id(&self) -> Option<&$a str> {
                match self {
                    $( EventView::$owned(v) => Some(v.client_id), )*
                    EventView::Unknown { .. } => None,
                }
            }

            /// The mountpoint of the client's listener; `None` for [`EventView::Unknown`].
            pub fn mountpoint(&self) -> Option<&$a str> {
                match self {
                    $( EventView::$owned(v) => Some(v.mountpoint), )*
                    EventView::Unknown { .. } => None,
                }
            }

            /// The wall-clock time at which the hook fired, if the event carries one.
            pub fn timestamp(&self) -> Option<Timestamp> {
                match self {
                    $( EventView::$owned(v) => v.timestamp, )*
                    EventView::Unknown { .. } => None,
                }
            }

            /// The cluster node on which the hook ran (`""` from a single node); `None` for
            /// [`EventView::Unknown`].
            pub fn node(&self) -> Option<&$a str> {
                match self {
                    $( EventView::$owned(v) => Some(v.node), )*
                    EventView::Unknown { .. } => None,
                }
            }
        }
    };
}

views! { 'a;
    OnRegister => OnRegisterView "on_register" {
        1 timestamp: Option<Timestamp>,
        2 peer_addr: &'a str,
        3 peer_port: i32,
        4 username: &'a str,
        5 mountpoint: &'a str,
        6 client_id: &'a str,
        7 user_properties: Repeated<'a, (&'a str, &'a str)>,
        8 session_id: &'a str,
        9 node: &'a str,
    }
    OnRegisterFailed => OnRegisterFailedView "on_register_failed" {
        1 timestamp: Option<Timestamp>,
        2 mountpoint: &'a str,
        3 client_id: &'a str,
        4 peer_addr: &'a str,
        5 peer_port: i32,
        6 username: &'a str,
        7 clean_session: bool,
        8 reason: i32,
        9 node: &'a str,
    }
    OnPublish => OnPublishView "on_publish" {
        1 timestamp: Option<Timestamp>,
        2 username: &'a str,
        3 client_id: &'a str,
        4 mountpoint: &'a str,
        5 qos: i32,
        6 topic: &'a str,
        7 payload: &'a [u8],
        8 retain: bool,
        9 matched_acl: Option<MatchedAclView<'a>>,
        10 session_id: &'a str,
        11 node: &'a str,
    }
    OnSubscribe => OnSubscribeView "on_subscribe" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 username: &'a str,
        5 topics: Repeated<'a, TopicInfoView<'a>>,
        6 session_id: &'a str,
        7 node: &'a str,
    }
    OnUnsubscribe => OnUnsubscribeView "on_unsubscribe" {
        1 timestamp: Option<Timestamp>,
        2 username: &'a str,
        3 client_id: &'a str,
        4 mountpoint: &'a str,
        5 topics: Repeated<'a, &'a str>,
        6 session_id: &'a str,
        7 node: &'a str,
    }
    OnDeliver => OnDeliverView "on_deliver" {
        1 timestamp: Option<Timestamp>,
        2 username: &'a str,
        3 client_id: &'a str,
        4 mountpoint: &'a str,
        5 topic: &'a str,
        6 qos: i32,
        7 is_retain: bool,
        8 payload: &'a [u8],
        9 matched_acl: Option<MatchedAclView<'a>>,
        10 persisted: bool,
        11 session_id: &'a str,
        12 node: &'a str,
    }
    OnDeliveryComplete => OnDeliveryCompleteView "on_delivery_complete" {
        1 timestamp: Option<Timestamp>,
        2 username: &'a str,
        3 client_id: &'a str,
        4 mountpoint: &'a str,
        5 topic: &'a str,
        6 qos: i32,
        7 is_retain: bool,
        8 payload: &'a [u8],
        9 matched_acl: Option<MatchedAclView<'a>>,
        10 persisted: bool,
        11 session_id: &'a str,
        12 node: &'a str,
    }
    OnOfflineMessage => OnOfflineMessageView "on_offline_message" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 qos: i32,
        5 topic: &'a str,
        6 payload: &'a [u8],
        7 retain: bool,
        8 session_id: &'a str,
        9 node: &'a str,
    }
    OnMessageDrop => OnMessageDropView "on_message_drop" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 qos: i32,
        5 topic: &'a str,
        6 payload: &'a [u8],
        7 reason: &'a str,
        8 matched_acl: Option<MatchedAclView<'a>>,
        9 session_id: &'a str,
        10 node: &'a str,
    }
    OnClientWakeUp => OnClientWakeUpView "on_client_wakeup" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 session_id: &'a str,
        5 node: &'a str,
    }
    OnClientOffline => OnClientOfflineView "on_client_offline" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 reason: i32,
        5 username: &'a str,
        6 session_id: &'a str,
        7 node: &'a str,
    }
    OnClientGone => OnClientGoneView "on_client_gone" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 reason: i32,
        5 username: &'a str,
        6 session_id: &'a str,
        7 node: &'a str,
    }
    OnSessionExpired => OnSessionExpiredView "on_session_expired" {
        1 timestamp: Option<Timestamp>,
        2 client_id: &'a str,
        3 mountpoint: &'a str,
        4 session_id: &'a str,
        5 node: &'a str,
    }
}

impl<'a> EventView<'a> {
    /// The connection's session id; `None` for `OnRegisterFailed` (a refused connection has no
    /// session) and [`EventView::Unknown`].
    pub fn session_id(&self) -> Option<&'a str> {
        Some(match self {
            EventView::OnRegister(v) => v.session_id,
            EventView::OnRegisterFailed(_) | EventView::Unknown { .. } => return None,
            EventView::OnPublish(v) => v.session_id,
            EventView::OnSubscribe(v) => v.session_id,
            EventView::OnUnsubscribe(v) => v.session_id,
            EventView::OnDeliver(v) => v.session_id,
            EventView::OnDeliveryComplete(v) => v.session_id,
            EventView::OnOfflineMessage(v) => v.session_id,
            EventView::OnMessageDrop(v) => v.session_id,
            EventView::OnClientWakeUp(v) => v.session_id,
            EventView::OnClientOffline(v) => v.session_id,
            EventView::OnClientGone(v) => v.session_id,
            EventView::OnSessionExpired(v) => v.session_id,
        })
    }

    /// The username the client connected with, for the events that carry one.
    pub fn username(&self) -> Option<&'a str> {
        Some(match self {
            EventView::OnRegister(v) => v.username,
            EventView::OnRegisterFailed(v) => v.username,
            EventView::OnPublish(v) => v.username,
            EventView::OnSubscribe(v) => v.username,
            EventView::OnUnsubscribe(v) => v.username,
            EventView::OnDeliver(v) => v.username,
            EventView::OnDeliveryComplete(v) => v.username,
            EventView::OnClientOffline(v) => v.username,
            EventView::OnClientGone(v) => v.username,
            _ => return None,
        })
    }

    /// Topic and payload for the events that carry a message (publish, deliver, delivery
    /// complete, offline message, message drop).
    pub fn message(&self) -> Option<(&'a str, &'a [u8])> {
        Some(match self {
            EventView::OnPublish(v) => (v.topic, v.payload),
            EventView::OnDeliver(v) => (v.topic, v.payload),
            EventView::OnDeliveryComplete(v) => (v.topic, v.payload),
            EventView::OnOfflineMessage(v) => (v.topic, v.payload),
            EventView::OnMessageDrop(v) => (v.topic, v.payload),
            _ => return None,
        })
    }
}

/// The two fields of a serialized `google.protobuf.Any`, borrowed, decoded with prost's rules
/// (the last occurrence of a field wins, unknown fields are skipped).
#[inline]
fn split_any(mut buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (mut type_url, mut value): (&[u8], &[u8]) = (&[], &[]);
    let ctx = DecodeContext::default();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        match tag {
            1 => Field::merge(&mut type_url, wire, &mut buf, ctx.clone())?,
            2 => Field::merge(&mut value, wire, &mut buf, ctx.clone())?,
            _ => skip_field(wire, tag, &mut buf, ctx.clone())?,
        }
    }
    Ok((type_url, value))
}

#[cfg(test)]
mod tests;
