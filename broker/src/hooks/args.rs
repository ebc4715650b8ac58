//! Every hook's arguments in one serializable form, with VerneMQ's field names and order
//! (`specs/webhooks.md` section 3): what a webhook endpoint receives as JSON and what a Lua
//! script receives as a table. Built from the hook's borrowed arguments; nothing is copied
//! until it is serialized.
//!
//! Binary fields (payloads, passwords, v5 authentication data) are written as [`Encoding`]
//! says: base64 text (VerneMQ webhooks' default), UTF-8 text (webhooks with `base64 = off`),
//! or bytes (Lua strings, through a serializer that keeps bytes as bytes).

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{ClientInfo, MessageInfo, Notification, RegisterRequest};
use crate::mqtt::{Properties, SubOptions};

/// How binary fields are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Base64 text.
    Base64,
    /// The bytes as UTF-8 text (invalid sequences replaced).
    Text,
    /// The bytes as bytes.
    Bytes,
}

/// A binary field.
#[derive(Clone, Copy, Debug)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    encoding: Encoding,
}

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        match self.encoding {
            Encoding::Base64 => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.bytes))
            }
            Encoding::Text => s.serialize_str(&String::from_utf8_lossy(self.bytes)),
            Encoding::Bytes => s.serialize_bytes(self.bytes),
        }
    }
}

fn blob(bytes: &[u8], encoding: Encoding) -> Blob<'_> {
    Blob { bytes, encoding }
}

/// v5 properties as VerneMQ names them (`p_content_type`, `p_user_property`, ...); an empty
/// set is `{}`.
#[derive(Clone, Copy, Debug)]
pub struct PropertiesArgs<'a> {
    properties: &'a Properties,
    encoding: Encoding,
}

struct UserProperties<'a>(&'a [(String, String)], Encoding);

impl Serialize for UserProperties<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Always base64 in VerneMQ's webhooks, whatever the payload setting.
        let encoding = self.1.replacing(Encoding::Text, Encoding::Base64);
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0 {
            let mut pair = std::collections::BTreeMap::new();
            pair.insert("key", blob(k.as_bytes(), encoding));
            pair.insert("val", blob(v.as_bytes(), encoding));
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl Serialize for PropertiesArgs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.properties;
        let mut m = s.serialize_map(None)?;
        if let Some(v) = p.payload_format_indicator {
            m.serialize_entry(
                "p_payload_format_indicator",
                if v == 1 { "utf8" } else { "unspecified" },
            )?;
        }
        if let Some(v) = p.message_expiry_interval {
            m.serialize_entry("p_message_expiry_interval", &v)?;
        }
        if let Some(v) = &p.content_type {
            m.serialize_entry("p_content_type", v)?;
        }
        if let Some(v) = &p.response_topic {
            m.serialize_entry("p_response_topic", v)?;
        }
        if let Some(v) = &p.correlation_data {
            // Raw, not base64, in VerneMQ.
            let encoding = self.encoding.replacing(Encoding::Base64, Encoding::Text);
            m.serialize_entry("p_correlation_data", &blob(v, encoding))?;
        }
        if !p.subscription_identifiers.is_empty() {
            m.serialize_entry("p_subscription_id", &p.subscription_identifiers)?;
        }
        if let Some(v) = p.session_expiry_interval {
            m.serialize_entry("p_session_expiry_interval", &v)?;
        }
        if let Some(v) = p.receive_maximum {
            m.serialize_entry("p_receive_max", &v)?;
        }
        if let Some(v) = p.topic_alias_maximum {
            m.serialize_entry("p_topic_alias_max", &v)?;
        }
        if let Some(v) = p.maximum_packet_size {
            m.serialize_entry("p_max_packet_size", &v)?;
        }
        if let Some(v) = p.request_response_information {
            m.serialize_entry("p_request_response_info", &(v == 1))?;
        }
        if let Some(v) = p.request_problem_information {
            m.serialize_entry("p_request_problem_info", &(v == 1))?;
        }
        if let Some(v) = &p.authentication_method {
            m.serialize_entry("p_authentication_method", v)?;
        }
        if let Some(v) = &p.authentication_data {
            let encoding = self.encoding.replacing(Encoding::Text, Encoding::Base64);
            m.serialize_entry("p_authentication_data", &blob(v, encoding))?;
        }
        if !p.user_properties.is_empty() {
            m.serialize_entry(
                "p_user_property",
                &UserProperties(&p.user_properties, self.encoding),
            )?;
        }
        if let Some(v) = &p.reason_string {
            m.serialize_entry("p_reason_string", v)?;
        }
        m.end()
    }
}

/// v5 properties in VerneMQ's form.
pub fn properties(properties: &Properties, encoding: Encoding) -> PropertiesArgs<'_> {
    PropertiesArgs {
        properties,
        encoding,
    }
}

/// One topic of a SUBSCRIBE (v5 options only for v5 clients).
#[derive(Clone, Debug, Serialize)]
pub struct TopicArgs<'a> {
    /// The filter.
    pub topic: &'a str,
    /// Requested (or granted; 128 refused) QoS.
    pub qos: u8,
    /// v5 no local.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_local: Option<bool>,
    /// v5 retain as published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rap: Option<bool>,
    /// v5 retain handling: `send_retain`, `send_if_new_sub` or `dont_send`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_handling: Option<&'static str>,
}

impl<'a> TopicArgs<'a> {
    /// A topic as a v3 client (`v5 = false`) or a v5 client asks for it.
    pub fn new(topic: &'a str, options: &SubOptions, v5: bool) -> TopicArgs<'a> {
        TopicArgs {
            topic,
            qos: options.qos as u8,
            no_local: v5.then_some(options.no_local),
            rap: v5.then_some(options.retain_as_published),
            retain_handling: v5.then_some(match options.retain_handling {
                0 => "send_retain",
                1 => "send_if_new_sub",
                _ => "dont_send",
            }),
        }
    }
}

/// A hook's arguments, in VerneMQ's shape. Serialized without a tag: each variant is the JSON
/// object (or Lua table) of its hook.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum HookArgs<'a> {
    /// `auth_on_register(_m5)`; `on_register(_m5)` has no password nor clean flag.
    Register {
        /// The client's IP.
        peer_addr: String,
        /// The client's port.
        peer_port: u16,
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id.
        client_id: &'a str,
        /// User name (`null` when none).
        username: Option<&'a str>,
        /// Password (`null` when none); absent for `on_register`.
        #[serde(skip_serializing_if = "Option::is_none")]
        password: Option<Option<Blob<'a>>>,
        /// v3 clean session.
        #[serde(skip_serializing_if = "Option::is_none")]
        clean_session: Option<bool>,
        /// v5 clean start.
        #[serde(skip_serializing_if = "Option::is_none")]
        clean_start: Option<bool>,
        /// v5 CONNECT properties.
        #[serde(skip_serializing_if = "Option::is_none")]
        properties: Option<PropertiesArgs<'a>>,
    },
    /// `auth_on_publish(_m5)`, `on_publish(_m5)`, `on_deliver(_m5)`, `on_offline_message`.
    Publish {
        /// User name (absent for `on_offline_message`).
        #[serde(skip_serializing_if = "Option::is_none")]
        username: Option<Option<&'a str>>,
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id (publisher, or receiver for `on_deliver` and `on_offline_message`).
        client_id: &'a str,
        /// QoS.
        qos: u8,
        /// Topic.
        topic: &'a str,
        /// Payload (left out for webhooks with `no_payload`).
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Blob<'a>>,
        /// Retain flag.
        retain: bool,
        /// v5 properties.
        #[serde(skip_serializing_if = "Option::is_none")]
        properties: Option<PropertiesArgs<'a>>,
    },
    /// `auth_on_subscribe(_m5)`, `on_subscribe(_m5)`.
    Subscribe {
        /// User name.
        username: Option<&'a str>,
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id.
        client_id: &'a str,
        /// The topics.
        topics: Vec<TopicArgs<'a>>,
        /// v5 SUBSCRIBE properties.
        #[serde(skip_serializing_if = "Option::is_none")]
        properties: Option<PropertiesArgs<'a>>,
    },
    /// `on_unsubscribe(_m5)`.
    Unsubscribe {
        /// User name.
        username: Option<&'a str>,
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id.
        client_id: &'a str,
        /// The filters.
        topics: Vec<&'a str>,
        /// v5 UNSUBSCRIBE properties.
        #[serde(skip_serializing_if = "Option::is_none")]
        properties: Option<PropertiesArgs<'a>>,
    },
    /// `on_client_wakeup`, `on_client_offline`, `on_client_gone`, `on_session_expired`.
    Client {
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id.
        client_id: &'a str,
    },
}

impl<'a> HookArgs<'a> {
    /// `auth_on_register` / `auth_on_register_m5`.
    pub fn auth_on_register(req: &'a RegisterRequest<'a>, encoding: Encoding) -> HookArgs<'a> {
        let c = req.client;
        let v5 = c.protocol.is_v5();
        HookArgs::Register {
            peer_addr: c.peer.ip().to_string(),
            peer_port: c.peer.port(),
            mountpoint: &c.mountpoint,
            client_id: &c.client_id,
            username: c.username.as_deref(),
            password: Some(
                req.password
                    .map(|p| blob(p, Encoding::Text.or_bytes(encoding))),
            ),
            clean_session: (!v5).then_some(req.clean_start),
            clean_start: v5.then_some(req.clean_start),
            properties: v5.then(|| properties(req.properties, encoding)),
        }
    }

    /// `auth_on_publish(_m5)` and `on_publish(_m5)`: the publisher and its message.
    pub fn publish(
        client: &'a ClientInfo,
        message: &MessageInfo<'a>,
        encoding: Encoding,
    ) -> HookArgs<'a> {
        HookArgs::message(client, message, encoding, client.protocol.is_v5())
    }

    /// `on_deliver(_m5)`: the receiving client and the message as it would be sent; its
    /// properties are sent even for v3 in VerneMQ (the message's map, usually `{}`).
    pub fn deliver(
        client: &'a ClientInfo,
        message: &MessageInfo<'a>,
        encoding: Encoding,
    ) -> HookArgs<'a> {
        HookArgs::message(client, message, encoding, true)
    }

    fn message(
        client: &'a ClientInfo,
        message: &MessageInfo<'a>,
        encoding: Encoding,
        with_properties: bool,
    ) -> HookArgs<'a> {
        HookArgs::Publish {
            username: Some(client.username.as_deref()),
            mountpoint: &client.mountpoint,
            client_id: &client.client_id,
            qos: message.qos as u8,
            topic: message.topic,
            payload: Some(blob(message.payload, encoding)),
            retain: message.retain,
            properties: with_properties.then(|| properties(message.properties, encoding)),
        }
    }

    /// `auth_on_subscribe(_m5)`: the topics as asked, with the SUBSCRIBE's properties for v5.
    pub fn subscribe(
        client: &'a ClientInfo,
        topics: Vec<TopicArgs<'a>>,
        props: &'a Properties,
        encoding: Encoding,
    ) -> HookArgs<'a> {
        HookArgs::Subscribe {
            username: client.username.as_deref(),
            mountpoint: &client.mountpoint,
            client_id: &client.client_id,
            topics,
            properties: client.protocol.is_v5().then(|| properties(props, encoding)),
        }
    }

    /// `on_unsubscribe(_m5)`: the filters as asked.
    pub fn unsubscribe(
        client: &'a ClientInfo,
        topics: &'a [String],
        props: &'a Properties,
        encoding: Encoding,
    ) -> HookArgs<'a> {
        HookArgs::Unsubscribe {
            username: client.username.as_deref(),
            mountpoint: &client.mountpoint,
            client_id: &client.client_id,
            topics: topics.iter().map(String::as_str).collect(),
            properties: client.protocol.is_v5().then(|| properties(props, encoding)),
        }
    }

    /// The same without the payload (webhooks with `no_payload`).
    pub fn without_payload(mut self) -> HookArgs<'a> {
        if let HookArgs::Publish { payload, .. } = &mut self {
            *payload = None;
        }
        self
    }

    /// A notification's arguments; `None` for `on_register_failed`, `on_delivery_complete`
    /// and `on_message_drop`, which VerneMQ's webhooks and Lua do not carry.
    pub fn notification(n: &Notification<'a>, encoding: Encoding) -> Option<HookArgs<'a>> {
        let client_only = |mountpoint: &'a str, client_id: &'a str| HookArgs::Client {
            mountpoint,
            client_id,
        };
        Some(match *n {
            Notification::Register {
                client,
                properties: props,
            } => HookArgs::Register {
                peer_addr: client.peer.ip().to_string(),
                peer_port: client.peer.port(),
                mountpoint: &client.mountpoint,
                client_id: &client.client_id,
                username: client.username.as_deref(),
                password: None,
                clean_session: None,
                clean_start: None,
                properties: client.protocol.is_v5().then(|| properties(props, encoding)),
            },
            Notification::Publish {
                client, message, ..
            } => HookArgs::publish(client, &message, encoding),
            Notification::Deliver {
                client, message, ..
            } => HookArgs::deliver(client, &message, encoding),
            Notification::OfflineMessage {
                mountpoint,
                client_id,
                message,
                ..
            } => HookArgs::Publish {
                username: None,
                mountpoint,
                client_id,
                qos: message.qos as u8,
                topic: message.topic,
                payload: Some(blob(message.payload, encoding)),
                retain: message.retain,
                properties: None,
            },
            Notification::Subscribe {
                client,
                topics,
                properties: props,
            } => {
                // Only the granted topics, as VerneMQ 2.2 passes them.
                let v5 = client.protocol.is_v5();
                let topics = topics
                    .iter()
                    .filter(|t| t.granted())
                    .map(|t| TopicArgs::new(&t.filter, &t.options, v5))
                    .collect();
                HookArgs::subscribe(client, topics, props, encoding)
            }
            Notification::Unsubscribe { client, topics } => HookArgs::Unsubscribe {
                username: client.username.as_deref(),
                mountpoint: &client.mountpoint,
                client_id: &client.client_id,
                topics: topics.iter().map(String::as_str).collect(),
                properties: None,
            },
            Notification::ClientWakeup { client }
            | Notification::ClientOffline { client, .. }
            | Notification::ClientGone { client, .. } => {
                client_only(&client.mountpoint, &client.client_id)
            }
            Notification::SessionExpired {
                mountpoint,
                client_id,
                ..
            } => client_only(mountpoint, client_id),
            Notification::RegisterFailed { .. }
            | Notification::DeliveryComplete { .. }
            | Notification::MessageDrop { .. } => return None,
        })
    }
}

impl Encoding {
    /// `to` if `self` is `from`: fields VerneMQ always writes one way.
    fn replacing(self, from: Encoding, to: Encoding) -> Encoding {
        if self == from { to } else { self }
    }

    /// `self` for text fields, unless binary fields are kept as bytes (Lua): then bytes.
    fn or_bytes(self, encoding: Encoding) -> Encoding {
        if encoding == Encoding::Bytes {
            Encoding::Bytes
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::mqtt::{Protocol, QoS};

    fn client(protocol: Protocol) -> ClientInfo {
        ClientInfo {
            mountpoint: String::new(),
            client_id: Arc::from("clientid"),
            username: Some("username".into()),
            peer: "127.0.0.1:8888".parse().unwrap(),
            session_id: Arc::from("s"),
            protocol,
        }
    }

    #[test]
    fn auth_on_register_is_vernemqs_body() {
        let c = client(Protocol::V311);
        let password = Bytes::from_static(b"password");
        let props = Properties::default();
        let req = RegisterRequest {
            client: &c,
            password: Some(&password),
            clean_start: false,
            properties: &props,
        };
        let v = serde_json::to_value(HookArgs::auth_on_register(&req, Encoding::Base64)).unwrap();
        assert_eq!(
            v,
            json!({"peer_addr":"127.0.0.1","peer_port":8888,"mountpoint":"","client_id":"clientid",
                   "username":"username","password":"password","clean_session":false})
        );
        // The order VerneMQ emits, kept by serde_json's preserve_order.
        let text =
            serde_json::to_string(&HookArgs::auth_on_register(&req, Encoding::Base64)).unwrap();
        assert!(
            text.starts_with(r#"{"peer_addr":"127.0.0.1","peer_port":8888,"mountpoint""#),
            "{text}"
        );
        let anonymous = RegisterRequest {
            password: None,
            ..req.clone()
        };
        let v =
            serde_json::to_value(HookArgs::auth_on_register(&anonymous, Encoding::Base64)).unwrap();
        assert_eq!(v["password"], serde_json::Value::Null);
    }

    #[test]
    fn v5_register_and_publish_carry_properties_with_vernemq_names() {
        let c = client(Protocol::V5);
        let props = Properties::from(crate::mqtt::PropertyFields {
            session_expiry_interval: Some(5),
            receive_maximum: Some(10),
            user_properties: vec![("k1".into(), "v1".into())],
            ..Default::default()
        });
        let req = RegisterRequest {
            client: &c,
            password: None,
            clean_start: true,
            properties: &props,
        };
        let v = serde_json::to_value(HookArgs::auth_on_register(&req, Encoding::Text)).unwrap();
        assert_eq!(v["clean_start"], json!(true));
        assert!(v.get("clean_session").is_none());
        assert_eq!(
            v["properties"],
            json!({"p_session_expiry_interval":5,"p_receive_max":10,
                   "p_user_property":[{"key":"azE=","val":"djE="}]})
        );
        let payload = Bytes::from_static(b"hello");
        let empty = Properties::default();
        let m = MessageInfo {
            topic: "a/b",
            payload: &payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: &empty,
        };
        let v = serde_json::to_value(HookArgs::publish(&c, &m, Encoding::Base64)).unwrap();
        assert_eq!(
            v,
            json!({"username":"username","mountpoint":"","client_id":"clientid","qos":1,
                   "topic":"a/b","payload":"aGVsbG8=","retain":false,"properties":{}})
        );
    }
}
