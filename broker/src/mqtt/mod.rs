//! Our MQTT codec: the packets of MQTT 3.1, 3.1.1 and 5.0, their properties and reason codes.
//!
//! Decoding works on a complete packet (the framing in [`codec`] checks the size limit from the
//! fixed header, before buffering the body) and returns a clear [`DecodeError`] whose
//! [`DecodeError::reason_code`] is the MQTT 5 reason code the connection is closed with.
//! Payloads are `Bytes` slices of the read buffer: a PUBLISH fans out without copying.

pub mod codec;
mod decode;
mod encode;
mod properties;

use bytes::{Buf, BufMut, Bytes};

pub use codec::MqttCodec;
pub use properties::{Properties, PropertyContext, PropertyFields, PropertyId};

pub mod reason;

pub use reason::{
    AuthReason, ConnAckReason, DisconnectReason, PubAckReason, PubRelReason, ReasonCode,
    SubAckReason, UnsubAckReason,
};

/// The protocol level a client connected with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5,
}

impl Protocol {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V31 => 3,
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }

    /// Whether packets carry properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// Fire and forget.
    #[default]
    AtMostOnce = 0,
    /// Acknowledged delivery (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (PUBREC/PUBREL/PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two QoS bits; 3 is invalid.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The last will of a client, published if it goes away abnormally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish to.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// v5 will properties (will delay, expiry, content type, ...).
    pub properties: Properties,
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level.
    pub protocol: Protocol,
    /// Clean session (v3) / clean start (v5).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier, possibly empty.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Last will.
    pub will: Option<Will>,
    /// v5 properties.
    pub properties: Properties,
}

/// CONNACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server had a session for this client.
    pub session_present: bool,
    /// The reason (on a v3 connection, written as the matching return code).
    pub code: ConnAckReason,
    /// v5 properties.
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic (may be empty in v5 when a topic alias stands for it).
    pub topic: String,
    /// Packet id; 0 for QoS 0.
    pub packet_id: u16,
    /// Payload, shared, never copied on fan-out.
    pub payload: Bytes,
    /// v5 properties.
    pub properties: Properties,
}

/// PUBACK and PUBREC (`R` = [`PubAckReason`]), PUBREL and PUBCOMP ([`PubRelReason`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResp<R = PubAckReason> {
    /// Packet id acknowledged.
    pub packet_id: u16,
    /// v5 reason code (always success on v3).
    pub reason: R,
    /// v5 properties.
    pub properties: Properties,
}

impl<R: ReasonCode> PubResp<R> {
    /// A success answer without properties.
    pub fn ok(packet_id: u16) -> PubResp<R> {
        PubResp {
            packet_id,
            reason: R::SUCCESS,
            properties: Properties::default(),
        }
    }
}

/// The options of one SUBSCRIBE filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// v5: do not send the subscriber its own publishes.
    pub no_local: bool,
    /// v5: keep the retain flag as published.
    pub retain_as_published: bool,
    /// v5: 0 send retained on subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id.
    pub packet_id: u16,
    /// Topic filters and their options.
    pub filters: Vec<(String, SubOptions)>,
    /// v5 properties (subscription identifier, user properties).
    pub properties: Properties,
}

/// SUBACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet id.
    pub packet_id: u16,
    /// One per filter: the QoS granted, or why it was refused.
    pub reasons: Vec<SubAckReason>,
    /// v5 properties.
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet id.
    pub packet_id: u16,
    /// Topic filters.
    pub filters: Vec<String>,
    /// v5 properties.
    pub properties: Properties,
}

/// UNSUBACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet id.
    pub packet_id: u16,
    /// v5: one reason code per filter (empty on v3).
    pub reasons: Vec<UnsubAckReason>,
    /// v5 properties.
    pub properties: Properties,
}

/// DISCONNECT (v5 carries a reason and properties; v3 has none).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// v5 reason code.
    pub reason: DisconnectReason,
    /// v5 properties.
    pub properties: Properties,
}

/// AUTH (v5 only).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code.
    pub reason: AuthReason,
    /// Properties.
    pub properties: Properties,
}

/// Every MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubResp),
    /// PUBREC.
    PubRec(PubResp),
    /// PUBREL.
    PubRel(PubResp<PubRelReason>),
    /// PUBCOMP.
    PubComp(PubResp<PubRelReason>),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH.
    Auth(Auth),
}

impl Packet {
    /// The packet's name, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// Why bytes from a client are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not parse (0x81).
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The packet parses but breaks a protocol rule (0x82).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The packet is larger than the server accepts (0x95).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// CONNECT with a protocol name or level the server does not speak.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// Protocol name found.
        name: String,
        /// Level found.
        level: u8,
    },
}

impl DecodeError {
    /// The reason to close a connection with (DISCONNECT).
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            DecodeError::Malformed(_) => DisconnectReason::MalformedPacket,
            DecodeError::Protocol(_) | DecodeError::UnsupportedProtocol { .. } => {
                DisconnectReason::ProtocolError
            }
            DecodeError::TooLarge { .. } => DisconnectReason::PacketTooLarge,
        }
    }

    /// The reason to refuse a CONNECT with (CONNACK).
    pub fn connack_reason(&self) -> ConnAckReason {
        match self {
            DecodeError::Malformed(_) => ConnAckReason::MalformedPacket,
            DecodeError::Protocol(_) => ConnAckReason::ProtocolError,
            DecodeError::TooLarge { .. } => ConnAckReason::PacketTooLarge,
            DecodeError::UnsupportedProtocol { .. } => ConnAckReason::UnsupportedProtocolVersion,
        }
    }
}

fn short(what: &str) -> DecodeError {
    DecodeError::Malformed(format!("packet too short for {what}"))
}

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(short("a byte"));
    }
    Ok(buf.get_u8())
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.remaining() < 2 {
        return Err(short("a two-byte integer"));
    }
    Ok(buf.get_u16())
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.remaining() < 4 {
        return Err(short("a four-byte integer"));
    }
    Ok(buf.get_u32())
}

/// A variable byte integer (at most 4 bytes).
pub(crate) fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let byte = read_u8(buf)?;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than 4 bytes".into(),
    ))
}

pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = read_u16(buf)? as usize;
    if buf.remaining() < len {
        return Err(short("binary data"));
    }
    Ok(buf.split_to(len))
}

/// A UTF-8 string as MQTT defines it: valid UTF-8 and no U+0000.
pub(crate) fn read_string(buf: &mut Bytes) -> Result<String, DecodeError> {
    let raw = read_binary(buf)?;
    let s = std::str::from_utf8(&raw)
        .map_err(|_| DecodeError::Malformed("string is not valid UTF-8".into()))?;
    if s.contains('\0') {
        return Err(DecodeError::Malformed("string contains U+0000".into()));
    }
    Ok(s.to_owned())
}

pub(crate) fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn write_varint(mut v: u32, buf: &mut impl BufMut) {
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

pub(crate) fn write_string(s: &str, buf: &mut impl BufMut) {
    write_binary(s.as_bytes(), buf);
}

pub(crate) fn write_binary(b: &[u8], buf: &mut impl BufMut) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// The largest remaining length MQTT can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

pub use decode::decode_packet;
pub use encode::{PublishRef, encode_packet, encoded_len};
