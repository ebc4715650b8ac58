//! The one table each Lua hook function receives, with vmq_diversity's field names
//! (`specs/lua.md` 3.2, 3.3): `addr`/`port` (not webhooks' `peer_addr`), payloads and
//! passwords as byte strings, absent values left out, v5 properties named `p_...` with user
//! properties as an array of one-pair tables.

use crate::hooks::{ClientInfo, MessageInfo, Notification, RegisterRequest, SubscribeTopic};
use crate::mqtt::{Properties, SubOptions};

use std::ffi::{c_char, c_int};

use bytes::Bytes;
use mlua::{Lua, Value, ffi};

use super::data::{self, Data};

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

/// A hook call's argument table, as a session hands it to a script's state.
#[derive(Clone, Debug)]
pub enum Args {
    /// Any table.
    Table(Data),
    /// A publish's table, the hot case (every message of every publisher when a script
    /// authorizes publishes): built in the state from its fields, without a generic table of
    /// key and value pairs made, sent and freed per message.
    Publish(PublishArgs),
}

impl Args {
    /// Builds the table in `lua`.
    pub fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        match self {
            Args::Table(d) => d.to_lua(lua),
            // SAFETY: as in `Data::to_lua`: only Lua's C API on the state mlua hands us,
            // inside its protected call, holding nothing that needs dropping.
            Args::Publish(p) => unsafe { lua.exec_raw((), |state| p.push(state)) },
        }
    }
}

/// The fields of `auth_on_publish(_m5)`'s table.
#[derive(Clone, Debug)]
pub struct PublishArgs {
    publisher: [Data; 3],
    qos: u8,
    topic: Bytes,
    payload: Bytes,
    retain: bool,
    properties: Data,
}

impl PublishArgs {
    /// Pushes the table onto `state`'s stack.
    ///
    /// # Safety
    /// As [`data::push`]: a live state inside a protected call, room for one more value.
    unsafe fn push(&self, state: *mut ffi::lua_State) {
        let [username, mountpoint, client_id] = &self.publisher;
        let fields: [(&str, &Data); 3] = [
            ("username", username),
            ("mountpoint", mountpoint),
            ("client_id", client_id),
        ];
        // SAFETY: per the contract; strings are copied by Lua from slices that outlive the
        // calls.
        unsafe {
            ffi::luaL_checkstack(state, 3, std::ptr::null());
            ffi::lua_createtable(state, 0, 8);
            let key = |k: &str| {
                ffi::lua_pushlstring(state, k.as_ptr().cast::<c_char>(), k.len());
            };
            for (k, v) in fields {
                if !matches!(v, Data::Nil) {
                    key(k);
                    data::push(state, v);
                    ffi::lua_rawset(state, -3);
                }
            }
            key("qos");
            ffi::lua_pushinteger(state, i64::from(self.qos));
            ffi::lua_rawset(state, -3);
            for (k, v) in [("topic", &self.topic), ("payload", &self.payload)] {
                key(k);
                ffi::lua_pushlstring(state, v.as_ptr().cast::<c_char>(), v.len());
                ffi::lua_rawset(state, -3);
            }
            key("retain");
            ffi::lua_pushboolean(state, c_int::from(self.retain));
            ffi::lua_rawset(state, -3);
            if !matches!(self.properties, Data::Nil) {
                key("properties");
                data::push(state, &self.properties);
                ffi::lua_rawset(state, -3);
            }
        }
    }
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

    /// The table of a message this client publishes.
    pub fn message(&self, m: &MessageInfo<'_>, with_properties: bool) -> PublishArgs {
        PublishArgs {
            publisher: self.0.clone(),
            qos: m.qos as u8,
            topic: Bytes::copy_from_slice(m.topic.as_bytes()),
            payload: m.payload.clone(),
            retain: m.retain,
            properties: if with_properties {
                properties(m.properties)
            } else {
                Data::Nil
            },
        }
    }
}

/// `auth_on_publish(_m5)`, `on_publish(_m5)`, `on_deliver(_m5)`: the client and the message.
pub fn publish(c: &ClientInfo, m: &MessageInfo<'_>, with_properties: bool) -> Data {
    Data::record([
        ("username", Data::opt(c.username.as_deref())),
        ("mountpoint", Data::str(&c.mountpoint)),
        ("client_id", Data::str(&*c.client_id)),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mqtt::{Protocol, QoS};

    fn client(username: Option<&str>, protocol: Protocol) -> ClientInfo {
        ClientInfo {
            mountpoint: "mp".into(),
            client_id: Arc::from("c1"),
            username: username.map(Into::into),
            peer: "127.0.0.1:1883".parse().unwrap(),
            session_id: Arc::from("s"),
            protocol,
        }
    }

    /// A table read back from a state, its pairs sorted (Lua keeps no order).
    fn read_back(v: Value) -> Data {
        let d = Data::from_lua(&v).unwrap();
        let Data::Table(mut pairs) = d else {
            panic!("not a table: {d:?}")
        };
        pairs.sort_by_key(|(k, _)| format!("{k:?}"));
        Data::Table(pairs)
    }

    /// The publish table built from its fields is the one built as a generic table.
    #[test]
    fn a_publish_table_built_from_its_fields_is_the_generic_one() {
        let lua = Lua::new();
        let _ = lua.set_memory_limit(64 << 20);
        let payload = Bytes::from_static(b"\x00binary\xff");
        let props = Properties::from(crate::mqtt::PropertyFields {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        });
        for (c, with_properties) in [
            (client(None, Protocol::V311), false),
            (client(Some("u"), Protocol::V5), true),
        ] {
            let m = MessageInfo {
                topic: "a/b",
                payload: &payload,
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: &props,
            };
            let generic = Args::Table(publish(&c, &m, with_properties));
            let fields = Args::Publish(Publisher::new(&c).message(&m, with_properties));
            let a = read_back(generic.to_lua(&lua).unwrap());
            let b = read_back(fields.to_lua(&lua).unwrap());
            assert_eq!(a, b);
            assert_eq!(a.field("username").is_some(), c.username.is_some());
            assert_eq!(a.field("properties").is_some(), with_properties);
        }
    }
}
