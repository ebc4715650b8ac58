//! MQTT 5 properties: one struct holding every property a packet may carry, decoded and encoded
//! in one place, with the per-packet rules (which properties are allowed, which may repeat).

use bytes::{Buf, BufMut, Bytes};

use super::{
    DecodeError, read_binary, read_string, read_u8, read_u16, read_u32, read_varint, varint_len,
    write_binary, write_string, write_varint,
};

/// The packets (and the will) that carry properties; each allows its own set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The will properties inside CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

/// Every MQTT 5 property. Absent properties are `None` (or empty for the repeatable ones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyFields {
    /// 0x01: the payload is UTF-8 (1) or unspecified bytes (0).
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds the message may live.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME type of the payload.
    pub content_type: Option<String>,
    /// 0x08: topic for the response (request/response).
    pub response_topic: Option<String>,
    /// 0x09: correlates a response with its request.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers (one on SUBSCRIBE, one per matching subscription on
    /// PUBLISH).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: the client id the server assigned.
    pub assigned_client_identifier: Option<String>,
    /// 0x13: keep-alive imposed by the server.
    pub server_keep_alive: Option<u16>,
    /// 0x15: extended authentication method.
    pub authentication_method: Option<String>,
    /// 0x16: extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17: whether the client wants reason strings and user properties on errors.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19: whether the client wants response information.
    pub request_response_information: Option<u8>,
    /// 0x1A: basis for response topics.
    pub response_information: Option<String>,
    /// 0x1C: another server to use.
    pub server_reference: Option<String>,
    /// 0x1F: human-readable diagnostic.
    pub reason_string: Option<String>,
    /// 0x21: how many QoS 1/2 publishes the sender accepts concurrently.
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias of this PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports.
    pub maximum_qos: Option<u8>,
    /// 0x25: whether the server supports retained messages.
    pub retain_available: Option<u8>,
    /// 0x26: user properties, in order, repeats allowed.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether the server supports wildcard subscriptions.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: whether the server supports subscription identifiers.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: whether the server supports shared subscriptions.
    pub shared_subscription_available: Option<u8>,
}

/// Whether property `id` may appear in `ctx`.
/// The MQTT 5 property identifiers (section 2.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01.
    PayloadFormatIndicator = 0x01,
    /// 0x02.
    MessageExpiryInterval = 0x02,
    /// 0x03.
    ContentType = 0x03,
    /// 0x08.
    ResponseTopic = 0x08,
    /// 0x09.
    CorrelationData = 0x09,
    /// 0x0B.
    SubscriptionIdentifier = 0x0B,
    /// 0x11.
    SessionExpiryInterval = 0x11,
    /// 0x12.
    AssignedClientIdentifier = 0x12,
    /// 0x13.
    ServerKeepAlive = 0x13,
    /// 0x15.
    AuthenticationMethod = 0x15,
    /// 0x16.
    AuthenticationData = 0x16,
    /// 0x17.
    RequestProblemInformation = 0x17,
    /// 0x18.
    WillDelayInterval = 0x18,
    /// 0x19.
    RequestResponseInformation = 0x19,
    /// 0x1A.
    ResponseInformation = 0x1A,
    /// 0x1C.
    ServerReference = 0x1C,
    /// 0x1F.
    ReasonString = 0x1F,
    /// 0x21.
    ReceiveMaximum = 0x21,
    /// 0x22.
    TopicAliasMaximum = 0x22,
    /// 0x23.
    TopicAlias = 0x23,
    /// 0x24.
    MaximumQos = 0x24,
    /// 0x25.
    RetainAvailable = 0x25,
    /// 0x26.
    UserProperty = 0x26,
    /// 0x27.
    MaximumPacketSize = 0x27,
    /// 0x28.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A.
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The identifier for a byte, if MQTT 5 has it.
    pub fn from_u8(id: u8) -> Option<PropertyId> {
        Some(match id {
            0x01 => PropertyId::PayloadFormatIndicator,
            0x02 => PropertyId::MessageExpiryInterval,
            0x03 => PropertyId::ContentType,
            0x08 => PropertyId::ResponseTopic,
            0x09 => PropertyId::CorrelationData,
            0x0B => PropertyId::SubscriptionIdentifier,
            0x11 => PropertyId::SessionExpiryInterval,
            0x12 => PropertyId::AssignedClientIdentifier,
            0x13 => PropertyId::ServerKeepAlive,
            0x15 => PropertyId::AuthenticationMethod,
            0x16 => PropertyId::AuthenticationData,
            0x17 => PropertyId::RequestProblemInformation,
            0x18 => PropertyId::WillDelayInterval,
            0x19 => PropertyId::RequestResponseInformation,
            0x1A => PropertyId::ResponseInformation,
            0x1C => PropertyId::ServerReference,
            0x1F => PropertyId::ReasonString,
            0x21 => PropertyId::ReceiveMaximum,
            0x22 => PropertyId::TopicAliasMaximum,
            0x23 => PropertyId::TopicAlias,
            0x24 => PropertyId::MaximumQos,
            0x25 => PropertyId::RetainAvailable,
            0x26 => PropertyId::UserProperty,
            0x27 => PropertyId::MaximumPacketSize,
            0x28 => PropertyId::WildcardSubscriptionAvailable,
            0x29 => PropertyId::SubscriptionIdentifierAvailable,
            0x2A => PropertyId::SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// Whether the property may appear in `ctx`.
    pub fn allowed_in(self, ctx: PropertyContext) -> bool {
        use PropertyContext::*;
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(ctx, Publish | Will),
            SubscriptionIdentifier => matches!(ctx, Publish | Subscribe),
            SessionExpiryInterval => matches!(ctx, Connect | ConnAck | Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQos
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => ctx == ConnAck,
            AuthenticationMethod | AuthenticationData => matches!(ctx, Connect | ConnAck | Auth),
            RequestProblemInformation | RequestResponseInformation => ctx == Connect,
            WillDelayInterval => ctx == Will,
            ServerReference => matches!(ctx, ConnAck | Disconnect),
            ReasonString => !matches!(ctx, Connect | Will | Publish | Subscribe | Unsubscribe),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(ctx, Connect | ConnAck)
            }
            TopicAlias => ctx == Publish,
            UserProperty => true,
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, id: PropertyId) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(format!(
            "property {id:?} appears twice"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(buf: &mut Bytes, id: PropertyId) -> Result<u8, DecodeError> {
    let v = read_u8(buf)?;
    if v > 1 {
        return Err(DecodeError::Protocol(format!(
            "property {id:?} must be 0 or 1, got {v}"
        )));
    }
    Ok(v)
}

/// The properties of a packet, boxed, and not allocated at all when there are none: every v3
/// packet and most v5 ones. A PUBLISH is moved between futures, vectors and queues several times
/// on its way; with ~340 bytes of properties inline it was ~400 bytes, and copying it was the
/// largest single cost of a QoS 0 message's path. Reading a property of an empty set reads an
/// empty static one; writing one (through `DerefMut`) allocates the set.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyFields>>);

/// What an absent set reads as.
static EMPTY: PropertyFields = PropertyFields::EMPTY;

impl Properties {
    /// Decodes the property length and the properties that follow it.
    pub fn decode(buf: &mut Bytes, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        if buf.first() == Some(&0) {
            buf.advance(1);
            return Ok(Properties(None));
        }
        PropertyFields::decode(buf, ctx).map(Properties::from)
    }

    /// The set, to change what is in it, if anything is: for rewriting per-hop properties
    /// without allocating a set for a packet that has none.
    pub fn present_mut(&mut self) -> Option<&mut PropertyFields> {
        self.0.as_deref_mut()
    }
}

impl From<PropertyFields> for Properties {
    fn from(fields: PropertyFields) -> Properties {
        if fields == EMPTY {
            Properties(None)
        } else {
            Properties(Some(Box::new(fields)))
        }
    }
}

impl std::ops::Deref for Properties {
    type Target = PropertyFields;
    fn deref(&self) -> &PropertyFields {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyFields {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PropertyFields {
    /// No property.
    pub const EMPTY: PropertyFields = PropertyFields {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    /// Decodes the property length and the properties that follow it.
    pub fn decode(buf: &mut Bytes, ctx: PropertyContext) -> Result<PropertyFields, DecodeError> {
        let len = read_varint(buf)? as usize;
        if len > buf.remaining() {
            return Err(DecodeError::Malformed(
                "property length exceeds the packet".into(),
            ));
        }
        let mut body = buf.split_to(len);
        let mut p = PropertyFields::default();
        while body.has_remaining() {
            let id = read_varint(&mut body)?;
            let id = u8::try_from(id)
                .ok()
                .and_then(PropertyId::from_u8)
                .ok_or_else(|| DecodeError::Malformed(format!("unknown property 0x{id:X}")))?;
            if !id.allowed_in(ctx) {
                return Err(DecodeError::Protocol(format!(
                    "property {id:?} is not allowed in {ctx:?}"
                )));
            }
            let b = &mut body;
            match id {
                PropertyId::PayloadFormatIndicator => {
                    set_once(&mut p.payload_format_indicator, flag(b, id)?, id)?
                }
                PropertyId::MessageExpiryInterval => {
                    set_once(&mut p.message_expiry_interval, read_u32(b)?, id)?
                }
                PropertyId::ContentType => set_once(&mut p.content_type, read_string(b)?, id)?,
                PropertyId::ResponseTopic => set_once(&mut p.response_topic, read_string(b)?, id)?,
                PropertyId::CorrelationData => {
                    set_once(&mut p.correlation_data, read_binary(b)?, id)?
                }
                PropertyId::SubscriptionIdentifier => {
                    let v = read_varint(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("subscription identifier 0".into()));
                    }
                    if ctx == PropertyContext::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol(
                            "SUBSCRIBE carries more than one subscription identifier".into(),
                        ));
                    }
                    p.subscription_identifiers.push(v);
                }
                PropertyId::SessionExpiryInterval => {
                    set_once(&mut p.session_expiry_interval, read_u32(b)?, id)?
                }
                PropertyId::AssignedClientIdentifier => {
                    set_once(&mut p.assigned_client_identifier, read_string(b)?, id)?
                }
                PropertyId::ServerKeepAlive => {
                    set_once(&mut p.server_keep_alive, read_u16(b)?, id)?
                }
                PropertyId::AuthenticationMethod => {
                    set_once(&mut p.authentication_method, read_string(b)?, id)?
                }
                PropertyId::AuthenticationData => {
                    set_once(&mut p.authentication_data, read_binary(b)?, id)?
                }
                PropertyId::RequestProblemInformation => {
                    set_once(&mut p.request_problem_information, flag(b, id)?, id)?
                }
                PropertyId::WillDelayInterval => {
                    set_once(&mut p.will_delay_interval, read_u32(b)?, id)?
                }
                PropertyId::RequestResponseInformation => {
                    set_once(&mut p.request_response_information, flag(b, id)?, id)?
                }
                PropertyId::ResponseInformation => {
                    set_once(&mut p.response_information, read_string(b)?, id)?
                }
                PropertyId::ServerReference => {
                    set_once(&mut p.server_reference, read_string(b)?, id)?
                }
                PropertyId::ReasonString => set_once(&mut p.reason_string, read_string(b)?, id)?,
                PropertyId::ReceiveMaximum => {
                    let v = read_u16(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("receive maximum 0".into()));
                    }
                    set_once(&mut p.receive_maximum, v, id)?
                }
                PropertyId::TopicAliasMaximum => {
                    set_once(&mut p.topic_alias_maximum, read_u16(b)?, id)?
                }
                PropertyId::TopicAlias => set_once(&mut p.topic_alias, read_u16(b)?, id)?,
                PropertyId::MaximumQos => set_once(&mut p.maximum_qos, flag(b, id)?, id)?,
                PropertyId::RetainAvailable => set_once(&mut p.retain_available, flag(b, id)?, id)?,
                PropertyId::UserProperty => {
                    let k = read_string(b)?;
                    let v = read_string(b)?;
                    p.user_properties.push((k, v));
                }
                PropertyId::MaximumPacketSize => {
                    let v = read_u32(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("maximum packet size 0".into()));
                    }
                    set_once(&mut p.maximum_packet_size, v, id)?
                }
                PropertyId::WildcardSubscriptionAvailable => {
                    set_once(&mut p.wildcard_subscription_available, flag(b, id)?, id)?
                }
                PropertyId::SubscriptionIdentifierAvailable => {
                    set_once(&mut p.subscription_identifier_available, flag(b, id)?, id)?
                }
                PropertyId::SharedSubscriptionAvailable => {
                    set_once(&mut p.shared_subscription_available, flag(b, id)?, id)?
                }
            }
        }
        Ok(p)
    }

    /// Calls `f` with (id, encoded length of the value) for every present property, in id
    /// order; shared by `len` and `encode` so the two cannot disagree.
    fn for_each(&self, mut f: impl FnMut(PropertyId, Value<'_>)) {
        macro_rules! opt {
            ($field:ident, $id:expr, $kind:ident) => {
                if let Some(v) = &self.$field {
                    f($id, Value::$kind(v.clone().into()));
                }
            };
        }
        opt!(
            payload_format_indicator,
            PropertyId::PayloadFormatIndicator,
            Byte
        );
        opt!(
            message_expiry_interval,
            PropertyId::MessageExpiryInterval,
            U32
        );
        if let Some(v) = &self.content_type {
            f(PropertyId::ContentType, Value::Str(v));
        }
        if let Some(v) = &self.response_topic {
            f(PropertyId::ResponseTopic, Value::Str(v));
        }
        if let Some(v) = &self.correlation_data {
            f(PropertyId::CorrelationData, Value::Bin(v));
        }
        for v in &self.subscription_identifiers {
            f(PropertyId::SubscriptionIdentifier, Value::Varint(*v));
        }
        opt!(
            session_expiry_interval,
            PropertyId::SessionExpiryInterval,
            U32
        );
        if let Some(v) = &self.assigned_client_identifier {
            f(PropertyId::AssignedClientIdentifier, Value::Str(v));
        }
        opt!(server_keep_alive, PropertyId::ServerKeepAlive, U16);
        if let Some(v) = &self.authentication_method {
            f(PropertyId::AuthenticationMethod, Value::Str(v));
        }
        if let Some(v) = &self.authentication_data {
            f(PropertyId::AuthenticationData, Value::Bin(v));
        }
        opt!(
            request_problem_information,
            PropertyId::RequestProblemInformation,
            Byte
        );
        opt!(will_delay_interval, PropertyId::WillDelayInterval, U32);
        opt!(
            request_response_information,
            PropertyId::RequestResponseInformation,
            Byte
        );
        if let Some(v) = &self.response_information {
            f(PropertyId::ResponseInformation, Value::Str(v));
        }
        if let Some(v) = &self.server_reference {
            f(PropertyId::ServerReference, Value::Str(v));
        }
        if let Some(v) = &self.reason_string {
            f(PropertyId::ReasonString, Value::Str(v));
        }
        opt!(receive_maximum, PropertyId::ReceiveMaximum, U16);
        opt!(topic_alias_maximum, PropertyId::TopicAliasMaximum, U16);
        opt!(topic_alias, PropertyId::TopicAlias, U16);
        opt!(maximum_qos, PropertyId::MaximumQos, Byte);
        opt!(retain_available, PropertyId::RetainAvailable, Byte);
        for (k, v) in &self.user_properties {
            f(PropertyId::UserProperty, Value::Pair(k, v));
        }
        opt!(maximum_packet_size, PropertyId::MaximumPacketSize, U32);
        opt!(
            wildcard_subscription_available,
            PropertyId::WildcardSubscriptionAvailable,
            Byte
        );
        opt!(
            subscription_identifier_available,
            PropertyId::SubscriptionIdentifierAvailable,
            Byte
        );
        opt!(
            shared_subscription_available,
            PropertyId::SharedSubscriptionAvailable,
            Byte
        );
    }

    /// Encoded length of the properties, without their own length prefix.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(|_, v| n += 1 + v.len());
        n
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded length including the length prefix.
    pub fn wire_len(&self) -> usize {
        let n = self.len();
        varint_len(n as u32) + n
    }

    /// Writes the length prefix and the properties.
    pub fn encode(&self, buf: &mut impl BufMut) {
        write_varint(self.len() as u32, buf);
        self.for_each(|id, v| {
            buf.put_u8(id as u8);
            v.write(buf);
        });
    }
}

/// One property value, borrowed for encoding.
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(u32),
    Str(&'a str),
    Bin(&'a Bytes),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::Varint(v) => varint_len(*v),
            Value::Str(s) => 2 + s.len(),
            Value::Bin(b) => 2 + b.len(),
            Value::Pair(k, v) => 4 + k.len() + v.len(),
        }
    }

    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Value::Byte(v) => buf.put_u8(*v),
            Value::U16(v) => buf.put_u16(*v),
            Value::U32(v) => buf.put_u32(*v),
            Value::Varint(v) => write_varint(*v, buf),
            Value::Str(s) => write_string(s, buf),
            Value::Bin(b) => write_binary(b, buf),
            Value::Pair(k, v) => {
                write_string(k, buf);
                write_string(v, buf);
            }
        }
    }
}
