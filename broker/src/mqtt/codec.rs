//! Framing of MQTT packets on a byte stream, as a tokio-util `Decoder`/`Encoder`.
//!
//! The size limit is enforced from the fixed header alone: an oversized packet is refused
//! before its body is buffered, so a client cannot make the broker allocate what it announces.

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    DecodeError, MAX_REMAINING_LENGTH, Packet, Protocol, decode_packet, encode_packet, encoded_len,
};

/// Errors of the MQTT stream: a bad packet, or the socket failing.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The client sent something that is not a valid packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Decodes packets from a client and encodes packets to it.
#[derive(Debug)]
pub struct MqttCodec {
    protocol: Option<Protocol>,
    max_packet_size: usize,
    /// A packet was read since the connection last went quiet ([`MqttCodec::quiet`]): the
    /// next one is likely close, so an empty buffer gets room for it ([`MIN_READ`]).
    talking: bool,
}

impl MqttCodec {
    /// A codec for a new connection, refusing packets larger than `max_packet_size` bytes
    /// (fixed header included, as MQTT 5 counts it).
    pub fn new(max_packet_size: usize) -> Self {
        MqttCodec {
            protocol: None,
            max_packet_size: max_packet_size.clamp(2, MAX_REMAINING_LENGTH + 5),
            talking: false,
        }
    }

    /// A codec for the client side of a connection speaking `protocol` (tests, load tools).
    pub fn for_client(protocol: Protocol, max_packet_size: usize) -> Self {
        MqttCodec {
            protocol: Some(protocol),
            max_packet_size: max_packet_size.clamp(2, MAX_REMAINING_LENGTH + 5),
            talking: false,
        }
    }

    /// The protocol of the connection, once its CONNECT was read.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The maximum size of an inbound packet.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Lowers (or raises, up to the protocol's limit) the maximum size of an inbound packet.
    pub fn set_max_packet_size(&mut self, max: usize) {
        self.max_packet_size = max.clamp(2, MAX_REMAINING_LENGTH + 5);
    }

    /// The connection has gone quiet and gave its read buffer back: until the next packet, an
    /// empty buffer is left as small as the reader makes it (an idle client then holds a few
    /// bytes, not [`MIN_READ`]).
    pub fn quiet(&mut self) {
        self.talking = false;
    }
}

/// The room the next read gets, at least, when a packet is incomplete. The frames handed out
/// share the buffer's allocation, so after a packet the buffer has no room left and must
/// allocate; asked for one byte (what `Framed` asks), it would read a packet in three system
/// calls (1 byte, 7, then the rest). A lone PUBLISH with a 64-byte payload is ~100 bytes.
const MIN_READ: usize = 1024;

/// Reads the remaining length after the first byte: `Ok(None)` if incomplete, else (value,
/// number of length bytes).
fn remaining_length(src: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = src.get(1 + i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes".into(),
    ))
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some((len, len_bytes)) = remaining_length(src)? else {
            if self.talking || !src.is_empty() {
                src.reserve(MIN_READ);
            }
            return Ok(None);
        };
        let total = 1 + len_bytes + len;
        if total > self.max_packet_size {
            return Err(DecodeError::TooLarge {
                size: total,
                max: self.max_packet_size,
            }
            .into());
        }
        if src.len() < total {
            src.reserve((total - src.len()).max(MIN_READ));
            return Ok(None);
        }
        let first = src[0];
        let mut frame = src.split_to(total);
        frame.advance(1 + len_bytes);
        let packet = decode_packet(first, frame.freeze(), self.protocol)?;
        if let Packet::Connect(c) = &packet {
            self.protocol.get_or_insert(c.protocol);
        }
        self.talking = true;
        Ok(Some(packet))
    }
}

impl Encoder<&Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        let p = self.protocol.unwrap_or(Protocol::V311);
        dst.reserve(encoded_len(packet, p));
        encode_packet(packet, p, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::*;
    use bytes::{BufMut, Bytes};
    use proptest::prelude::*;

    fn roundtrip(packet: &Packet, p: Protocol) -> Packet {
        let mut buf = BytesMut::new();
        encode_packet(packet, p, &mut buf);
        assert_eq!(buf.len(), encoded_len(packet, p), "{packet:?}");
        let mut codec = MqttCodec::new(1 << 20);
        codec.protocol = Some(p);
        let out = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        out
    }

    fn string() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/ü+#$_-]{0,20}"
    }

    fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
        (
            proptest::option::of(0..2u8),
            proptest::option::of(any::<u32>()),
            proptest::option::of(string()),
            proptest::collection::vec((string(), string()), 0..3),
            proptest::option::of(1..u16::MAX),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        )
            .prop_map(move |(pfi, expiry, s, user, n, bin)| {
                let mut p = Properties::from(PropertyFields {
                    user_properties: user,
                    ..Default::default()
                });
                match ctx {
                    PropertyContext::Publish | PropertyContext::Will => {
                        p.payload_format_indicator = pfi;
                        p.message_expiry_interval = expiry;
                        p.content_type = s.clone();
                        p.response_topic = s;
                        p.correlation_data = bin.map(Bytes::from);
                        if ctx == PropertyContext::Publish {
                            p.topic_alias = n;
                            p.subscription_identifiers =
                                expiry.map_or(vec![], |e| vec![e % 1000 + 1, 7]);
                        } else {
                            p.will_delay_interval = expiry;
                        }
                    }
                    PropertyContext::Connect => {
                        p.session_expiry_interval = expiry;
                        p.receive_maximum = n;
                        p.topic_alias_maximum = n;
                        p.maximum_packet_size = expiry.map(|e| e.max(1));
                        p.request_problem_information = pfi;
                        p.authentication_method = s;
                        p.authentication_data = bin.map(Bytes::from);
                    }
                    PropertyContext::ConnAck => {
                        p.assigned_client_identifier = s.clone();
                        p.reason_string = s;
                        p.server_keep_alive = n;
                        p.maximum_qos = pfi;
                        p.retain_available = pfi;
                        p.shared_subscription_available = pfi;
                    }
                    PropertyContext::Subscribe => {
                        p.subscription_identifiers = n.map_or(vec![], |n| vec![u32::from(n)]);
                    }
                    PropertyContext::Unsubscribe => {}
                    _ => p.reason_string = s,
                }
                p
            })
    }

    fn qos() -> impl Strategy<Value = QoS> {
        (0..3u8).prop_map(|q| QoS::from_u8(q).unwrap())
    }

    /// Any code of reason kind `R`.
    fn code<R: ReasonCode>() -> impl Strategy<Value = R> {
        any::<u8>().prop_filter_map("a code of this packet kind", R::from_code)
    }

    fn packet(p: Protocol) -> impl Strategy<Value = Packet> {
        let v5 = p.is_v5();
        // On v3 only the codes MQTT 3 can say survive a round trip.
        let connack = (any::<u8>(), code::<ConnAckReason>()).prop_map(move |(b, r)| {
            if v5 {
                r
            } else {
                ConnAckReason::from_v3_code(b % 6).unwrap_or_default()
            }
        });
        let suback = code::<SubAckReason>().prop_map(move |r| {
            if v5 || !r.is_failure() {
                r
            } else {
                SubAckReason::UnspecifiedError
            }
        });
        let pp = move |ctx| {
            properties(ctx).prop_map(move |x| if v5 { x } else { Properties::default() })
        };
        prop_oneof![
            (
                string(),
                any::<bool>(),
                any::<u16>(),
                proptest::option::of(string()),
                proptest::option::of((
                    string(),
                    proptest::collection::vec(any::<u8>(), 0..50),
                    qos(),
                    any::<bool>(),
                    pp(PropertyContext::Will)
                )),
                pp(PropertyContext::Connect)
            )
                .prop_map(
                    move |(client_id, clean_start, keep_alive, username, will, properties)| {
                        Packet::Connect(Box::new(Connect {
                            protocol: p,
                            clean_start,
                            keep_alive,
                            client_id,
                            password: username
                                .as_ref()
                                .map(|u| Bytes::from(u.clone().into_bytes())),
                            username,
                            will: will.map(|(topic, payload, qos, retain, properties)| Will {
                                topic,
                                payload: payload.into(),
                                qos,
                                retain,
                                properties,
                            }),
                            properties,
                        }))
                    }
                ),
            (any::<bool>(), connack, pp(PropertyContext::ConnAck)).prop_map(
                |(session_present, code, properties)| {
                    Packet::ConnAck(ConnAck {
                        session_present,
                        code,
                        properties,
                    })
                }
            ),
            (
                any::<bool>(),
                qos(),
                any::<bool>(),
                string(),
                1..u16::MAX,
                proptest::collection::vec(any::<u8>(), 0..100),
                pp(PropertyContext::Publish)
            )
                .prop_map(|(dup, qos, retain, topic, id, payload, properties)| {
                    Packet::Publish(Publish {
                        dup: dup && qos != QoS::AtMostOnce,
                        qos,
                        retain,
                        topic,
                        packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
                        payload: payload.into(),
                        properties,
                    })
                }),
            (
                any::<u16>(),
                0..4u8,
                code::<PubAckReason>(),
                code::<PubRelReason>(),
                pp(PropertyContext::PubResp)
            )
                .prop_map(move |(id, kind, ack, rel, properties)| {
                    let ack = PubResp {
                        packet_id: id,
                        reason: if v5 { ack } else { PubAckReason::Success },
                        properties: properties.clone(),
                    };
                    let rel = PubResp {
                        packet_id: id,
                        reason: if v5 { rel } else { PubRelReason::Success },
                        properties,
                    };
                    match kind {
                        0 => Packet::PubAck(ack),
                        1 => Packet::PubRec(ack),
                        2 => Packet::PubRel(rel),
                        _ => Packet::PubComp(rel),
                    }
                }),
            (
                1..u16::MAX,
                proptest::collection::vec(
                    (string(), qos(), any::<bool>(), any::<bool>(), 0..3u8),
                    1..5
                ),
                pp(PropertyContext::Subscribe)
            )
                .prop_map(move |(packet_id, filters, properties)| Packet::Subscribe(
                    Subscribe {
                        packet_id,
                        filters: filters
                            .into_iter()
                            .map(|(f, qos, nl, rap, rh)| (
                                f,
                                if v5 {
                                    SubOptions {
                                        qos,
                                        no_local: nl,
                                        retain_as_published: rap,
                                        retain_handling: rh,
                                    }
                                } else {
                                    SubOptions {
                                        qos,
                                        ..Default::default()
                                    }
                                }
                            ))
                            .collect(),
                        properties,
                    }
                )),
            (
                any::<u16>(),
                proptest::collection::vec(suback, 1..5),
                pp(PropertyContext::SubAck)
            )
                .prop_map(|(packet_id, reasons, properties)| Packet::SubAck(SubAck {
                    packet_id,
                    reasons,
                    properties
                })),
            (
                1..u16::MAX,
                proptest::collection::vec(string(), 1..4),
                pp(PropertyContext::Unsubscribe)
            )
                .prop_map(|(packet_id, filters, properties)| Packet::Unsubscribe(
                    Unsubscribe {
                        packet_id,
                        filters,
                        properties
                    }
                )),
            (
                any::<u16>(),
                proptest::collection::vec(code::<UnsubAckReason>(), 1..4),
                pp(PropertyContext::UnsubAck)
            )
                .prop_map(move |(packet_id, reasons, properties)| Packet::UnsubAck(
                    UnsubAck {
                        packet_id,
                        reasons: if v5 { reasons } else { vec![] },
                        properties,
                    }
                )),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
            (code::<DisconnectReason>(), pp(PropertyContext::Disconnect)).prop_map(
                move |(reason, properties)| {
                    Packet::Disconnect(Disconnect {
                        reason: if v5 {
                            reason
                        } else {
                            DisconnectReason::default()
                        },
                        properties,
                    })
                }
            ),
        ]
    }

    /// Packets that arrive one at a time, as from a publisher at a modest rate: a read never
    /// returns more than what has arrived of the current packet.
    struct OneByOne {
        arrivals: std::collections::VecDeque<Bytes>,
        reads: usize,
    }

    impl tokio::io::AsyncRead for OneByOne {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.reads += 1;
            if let Some(front) = self.arrivals.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front.split_to(n));
                if front.is_empty() {
                    self.arrivals.pop_front();
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_packet_that_arrives_alone_is_read_in_one_call() {
        use futures::StreamExt;
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "bench/1/2".into(),
            packet_id: 0,
            payload: Bytes::from(vec![7u8; 64]),
            properties: Properties::default(),
        });
        let mut one = BytesMut::new();
        encode_packet(&publish, Protocol::V311, &mut one);
        let arrivals = (0..100).map(|_| one.clone().freeze()).collect();
        let reader = OneByOne { arrivals, reads: 0 };
        let mut codec = MqttCodec::new(1 << 20);
        codec.protocol = Some(Protocol::V311);
        // No initial room, as for a connection whose buffers were given back.
        let mut framed = tokio_util::codec::FramedRead::with_capacity(reader, codec, 0);
        // The packets are kept, as the broker keeps messages in flight: their frames share
        // the read buffer's allocations.
        let mut kept = Vec::new();
        while let Some(p) = framed.next().await {
            kept.push(p.unwrap());
        }
        assert_eq!(kept.len(), 100);
        assert!(kept.iter().all(|p| *p == publish));
        // The first packet in two reads (with no buffer, `Framed` makes room for one byte),
        // then one read per packet, and one that sees the end.
        assert_eq!(framed.get_ref().reads, 102);
    }

    /// An idle client's empty buffer stays empty until a byte arrives; once it talks, an empty
    /// buffer gets room for a whole packet, until it goes quiet again.
    #[test]
    fn an_empty_buffer_gets_room_only_while_the_client_talks() {
        let mut codec = MqttCodec::new(1 << 20);
        let mut empty = BytesMut::new();
        assert!(codec.decode(&mut empty).unwrap().is_none());
        assert_eq!(
            empty.capacity(),
            0,
            "a new connection's buffer is the reader's to size"
        );

        let mut buf = BytesMut::new();
        encode_packet(&Packet::PingReq, Protocol::V311, &mut buf);
        codec.protocol = Some(Protocol::V311);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Packet::PingReq));
        let mut empty = BytesMut::new();
        assert!(codec.decode(&mut empty).unwrap().is_none());
        assert!(
            empty.capacity() >= MIN_READ,
            "a talking client's next packet is one read"
        );

        codec.quiet();
        let mut empty = BytesMut::new();
        assert!(codec.decode(&mut empty).unwrap().is_none());
        assert_eq!(empty.capacity(), 0, "a quiet client holds no read buffer");
        // A packet begun is given room whatever the state.
        let mut partial = BytesMut::from(&[0x30u8][..]);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        assert!(partial.capacity() >= MIN_READ);
    }

    proptest! {
        #[test]
        fn v5_roundtrip(packet in packet(Protocol::V5)) {
            prop_assert_eq!(roundtrip(&packet, Protocol::V5), packet);
        }

        #[test]
        fn v311_roundtrip(packet in packet(Protocol::V311)) {
            prop_assert_eq!(roundtrip(&packet, Protocol::V311), packet);
        }

        #[test]
        fn v31_roundtrip(packet in packet(Protocol::V31)) {
            prop_assert_eq!(roundtrip(&packet, Protocol::V31), packet);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for p in [None, Some(Protocol::V311), Some(Protocol::V5)] {
                let mut codec = MqttCodec::new(1024);
                codec.protocol = p;
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(_)) = codec.decode(&mut buf) {}
            }
        }
    }

    #[test]
    fn oversized_packet_is_refused_from_the_header() {
        let mut codec = MqttCodec::new(100);
        let mut buf = BytesMut::new();
        buf.put_u8(0x30);
        buf.put_slice(&[0xff, 0xff, 0xff, 0x7f]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Decode(DecodeError::TooLarge {
                size: 268_435_460,
                max: 100
            })
        ));
    }

    #[test]
    fn one_byte_at_a_time() {
        let packets = [
            Packet::PingReq,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "a/b".into(),
                packet_id: 7,
                payload: Bytes::from(vec![1u8; 300]),
                properties: Properties::default(),
            }),
        ];
        let mut wire = BytesMut::new();
        for p in &packets {
            encode_packet(p, Protocol::V311, &mut wire);
        }
        let mut codec = MqttCodec::new(1 << 20);
        codec.protocol = Some(Protocol::V311);
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for b in wire {
            buf.put_u8(b);
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        assert_eq!(out, packets);
    }

    #[test]
    fn bad_protocol_name_is_unsupported() {
        let mut buf = BytesMut::from(&b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00"[..]);
        let err = MqttCodec::new(1024).decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Decode(DecodeError::UnsupportedProtocol { level: 4, .. })
            ),
            "{err}"
        );
    }
}
