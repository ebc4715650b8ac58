//! The one table each Lua hook function receives, with vmq_diversity's field names
//! (`specs/lua.md` 3.2, 3.3): `addr`/`port` (not webhooks' `peer_addr`), payloads and
//! passwords as byte strings, absent values left out, v5 properties named `p_...` with user
//! properties as an array of one-pair tables.

use crate::hooks::{ClientInfo, MessageInfo, Notification, RegisterRequest, SubscribeTopic};
use crate::mqtt::{Properties, SubOptions};

use super::data::Data;

fn int(n: impl Into<i64>) -> Data {
    Data::Int(n.into())
}

/// v5 properties as vmq_diversity gives them.
pub fn properties(p: &Properties) -> Data {
    let mut f: Vec<(&'static str, Data)> = Vec::new();
    if let Some(v) = p.payload_format_indicator {
        f.push((
            "p_payload_format_indicator",
            Data::str(if v == 1 { "utf8" } else { "undefined" }),
        ));
    }
    let mut num = |k, v: Option<u32>| {
        if let Some(v) = v {
            f.push((k, int(v)));
        }
    };
    num("p_message_expiry_interval", p.message_expiry_interval);
    num("p_session_expiry_interval", p.session_expiry_interval);
    num("p_will_delay_interval", p.will_delay_interval);
    num("p_max_packet_size", p.maximum_packet_size);
    num("p_receive_max", p.receive_maximum.map(u32::from));
    num("p_topic_alias_max", p.topic_alias_maximum.map(u32::from));
    num("p_topic_alias", p.topic_alias.map(u32::from));
    let mut text = |k, v: &Option<String>| {
        if let Some(v) = v {
            f.push((k, Data::str(v)));
        }
    };
    text("p_content_type", &p.content_type);
    text("p_response_topic", &p.response_topic);
    text("p_authentication_method", &p.authentication_method);
    text("p_reason_string", &p.reason_string);
    if let Some(v) = &p.correlation_data {
        f.push(("p_correlation_data", Data::Str(v.clone())));
    }
    if let Some(v) = &p.authentication_data {
        f.push(("p_authentication_data", Data::Str(v.clone())));
    }
    if let Some(v) = p.request_problem_information {
        f.push(("p_request_problem_info", Data::Bool(v == 1)));
    }
    if let Some(v) = p.request_response_information {
        f.push(("p_request_response_info", Data::Bool(v == 1)));
    }
    if !p.subscription_identifiers.is_empty() {
        f.push((
            "p_subscription_id",
            Data::array(p.subscription_identifiers.iter().map(|i| int(*i)).collect()),
        ));
    }
    if !p.user_properties.is_empty() {
        f.push((
            "p_user_property",
            Data::array(
                p.user_properties
                    .iter()
                    .map(|(k, v)| Data::Table(vec![(Data::str(k), Data::str(v))]))
                    .collect(),
            ),
        ));
    }
    Data::record(f)
}

/// `auth_on_register(_m5)`.
pub fn register(req: &RegisterRequest<'_>) -> Data {
    let c = req.client;
    let v5 = c.protocol.is_v5();
    Data::record([
        ("addr", Data::str(c.peer.ip().to_string())),
        ("port", int(c.peer.port())),
        ("mountpoint", Data::str(&c.mountpoint)),
        ("client_id", Data::str(&*c.client_id)),
        ("username", Data::opt(c.username.as_deref())),
        (
            "password",
            req.password.map_or(Data::Nil, |p| Data::Str(p.clone())),
        ),
        if v5 {
            ("clean_start", Data::Bool(req.clean_start))
        } else {
            ("clean_session", Data::Bool(req.clean_start))
        },
        (
            "properties",
            if v5 {
                properties(req.properties)
            } else {
                Data::Nil
            },
        ),
    ])
}

/// The publisher's part of a publish's table, made once for all the messages of a batch (its
/// strings are then shared, not copied per message).
pub struct Publisher([Data; 3]);

impl Publisher {
    pub fn new(c: &ClientInfo) -> Publisher {
        Publisher([
            Data::opt(c.username.as_deref()),
            Data::str(&c.mountpoint),
            Data::str(&*c.client_id),
        ])
    }
}

/// `auth_on_publish(_m5)`, `on_publish(_m5)`, `on_deliver(_m5)`: the client and the message.
pub fn publish(c: &ClientInfo, m: &MessageInfo<'_>, with_properties: bool) -> Data {
    published(&Publisher::new(c), m, with_properties)
}

/// [`publish`] with the publisher's part made beforehand.
pub fn published(c: &Publisher, m: &MessageInfo<'_>, with_properties: bool) -> Data {
    let [username, mountpoint, client_id] = c.0.clone();
    Data::record([
        ("username", username),
        ("mountpoint", mountpoint),
        ("client_id", client_id),
        ("qos", int(m.qos as u8)),
        ("topic", Data::str(m.topic)),
        ("payload", Data::Str(m.payload.clone())),
        ("retain", Data::Bool(m.retain)),
        (
            "properties",
            if with_properties {
                properties(m.properties)
            } else {
                Data::Nil
            },
        ),
    ])
}

fn topic(filter: &str, o: &SubOptions, v5: bool) -> Data {
    let qos = if v5 {
        Data::array(vec![
            int(o.qos as u8),
            Data::record([
                ("no_local", Data::Bool(o.no_local)),
                ("rap", Data::Bool(o.retain_as_published)),
                (
                    "retain_handling",
                    Data::str(match o.retain_handling {
                        0 => "send_retain",
                        1 => "send_if_new_sub",
                        _ => "dont_send",
                    }),
                ),
            ]),
        ])
    } else {
        int(o.qos as u8)
    };
    Data::array(vec![Data::str(filter), qos])
}

/// `auth_on_subscribe(_m5)` and `on_subscribe(_m5)`.
pub fn subscribe<'a>(
    c: &ClientInfo,
    topics: impl Iterator<Item = (&'a str, &'a SubOptions)>,
    props: &Properties,
) -> Data {
    let v5 = c.protocol.is_v5();
    Data::record([
        ("username", Data::opt(c.username.as_deref())),
        ("mountpoint", Data::str(&c.mountpoint)),
        ("client_id", Data::str(&*c.client_id)),
        (
            "topics",
            Data::array(topics.map(|(f, o)| topic(f, o, v5)).collect()),
        ),
        ("properties", if v5 { properties(props) } else { Data::Nil }),
    ])
}

/// The asked topics of a SUBSCRIBE.
pub fn asked(topics: &[SubscribeTopic]) -> impl Iterator<Item = (&str, &SubOptions)> {
    topics.iter().map(|t| (t.filter.as_str(), &t.options))
}

/// `on_unsubscribe(_m5)`.
pub fn unsubscribe(c: &ClientInfo, topics: &[String], props: &Properties) -> Data {
    Data::record([
        ("username", Data::opt(c.username.as_deref())),
        ("mountpoint", Data::str(&c.mountpoint)),
        ("client_id", Data::str(&*c.client_id)),
        (
            "topics",
            Data::array(topics.iter().map(Data::str).collect()),
        ),
        (
            "properties",
            if c.protocol.is_v5() {
                properties(props)
            } else {
                Data::Nil
            },
        ),
    ])
}

/// A notification's table; `None` for those vmq_diversity does not have.
pub fn notification(n: &Notification<'_>) -> Option<Data> {
    let client_only = |mountpoint: &str, client_id: &str| {
        Data::record([
            ("mountpoint", Data::str(mountpoint)),
            ("client_id", Data::str(client_id)),
        ])
    };
    Some(match *n {
        Notification::Register {
            client,
            properties: p,
        } => Data::record([
            ("addr", Data::str(client.peer.ip().to_string())),
            ("port", int(client.peer.port())),
            ("mountpoint", Data::str(&client.mountpoint)),
            ("client_id", Data::str(&*client.client_id)),
            ("username", Data::opt(client.username.as_deref())),
            (
                "properties",
                if client.protocol.is_v5() {
                    properties(p)
                } else {
                    Data::Nil
                },
            ),
        ]),
        Notification::Publish {
            client, message, ..
        } => publish(client, &message, client.protocol.is_v5()),
        Notification::Subscribe {
            client,
            topics,
            properties: p,
        } => subscribe(
            client,
            topics
                .iter()
                .filter(|t| t.granted())
                .map(|t| (t.filter.as_str(), &t.options)),
            p,
        ),
        Notification::OfflineMessage {
            mountpoint,
            client_id,
            message,
            ..
        } => Data::record([
            ("mountpoint", Data::str(mountpoint)),
            ("client_id", Data::str(client_id)),
            ("qos", int(message.qos as u8)),
            ("topic", Data::str(message.topic)),
            ("payload", Data::Str(message.payload.clone())),
            ("retain", Data::Bool(message.retain)),
        ]),
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
        _ => return None,
    })
}
