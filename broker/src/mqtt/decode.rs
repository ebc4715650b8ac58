//! Packet bodies from bytes. The fixed header has been read and the whole body is in `body`.

use bytes::{Buf, Bytes};

use super::*;

fn check_flags(first: u8, expected: u8, name: &str) -> Result<(), DecodeError> {
    if first & 0x0f != expected {
        return Err(DecodeError::Malformed(format!(
            "{name} with reserved flags 0x{:X}",
            first & 0x0f
        )));
    }
    Ok(())
}

fn props(p: Protocol, buf: &mut Bytes, ctx: PropertyContext) -> Result<Properties, DecodeError> {
    if p.is_v5() {
        Properties::decode(buf, ctx)
    } else {
        Ok(Properties::default())
    }
}

fn finished(buf: &Bytes, name: &str) -> Result<(), DecodeError> {
    if buf.has_remaining() {
        return Err(DecodeError::Malformed(format!(
            "{} unexpected bytes at the end of {name}",
            buf.remaining()
        )));
    }
    Ok(())
}

/// Decodes one packet body. `protocol` is the connection's protocol once CONNECT was read; a
/// CONNECT brings its own.
pub fn decode_packet(
    first: u8,
    mut body: Bytes,
    protocol: Option<Protocol>,
) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    if kind == 1 {
        check_flags(first, 0, "CONNECT")?;
        return decode_connect(&mut body).map(|c| Packet::Connect(Box::new(c)));
    }
    let p = protocol.unwrap_or(Protocol::V311);
    let b = &mut body;
    let packet = match kind {
        2 => {
            check_flags(first, 0, "CONNACK")?;
            let flags = read_u8(b)?;
            let byte = read_u8(b)?;
            let code = if p.is_v5() {
                ConnAckReason::from_code(byte)
            } else {
                ConnAckReason::from_v3_code(byte)
            }
            .ok_or_else(|| unknown_reason("CONNACK", byte))?;
            Packet::ConnAck(ConnAck {
                session_present: flags & 1 == 1,
                code,
                properties: props(p, b, PropertyContext::ConnAck)?,
            })
        }
        3 => Packet::Publish(decode_publish(first, b, p)?),
        4 => {
            check_flags(first, 0, "PUBACK")?;
            Packet::PubAck(decode_pub_resp(b, p)?)
        }
        5 => {
            check_flags(first, 0, "PUBREC")?;
            Packet::PubRec(decode_pub_resp(b, p)?)
        }
        6 => {
            check_flags(first, 2, "PUBREL")?;
            Packet::PubRel(decode_pub_resp(b, p)?)
        }
        7 => {
            check_flags(first, 0, "PUBCOMP")?;
            Packet::PubComp(decode_pub_resp(b, p)?)
        }
        8 => {
            check_flags(first, 2, "SUBSCRIBE")?;
            Packet::Subscribe(decode_subscribe(b, p)?)
        }
        9 => {
            check_flags(first, 0, "SUBACK")?;
            let packet_id = read_u16(b)?;
            let properties = props(p, b, PropertyContext::SubAck)?;
            let reasons = b
                .split_to(b.remaining())
                .iter()
                .map(|&byte| match reason_code::<SubAckReason>("SUBACK", byte) {
                    // MQTT 3 has the granted QoS and 0x80, nothing else.
                    Ok(r) if !p.is_v5() && r.v3_code() != byte => {
                        Err(unknown_reason("SUBACK", byte))
                    }
                    other => other,
                })
                .collect::<Result<_, _>>()?;
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        10 => {
            check_flags(first, 2, "UNSUBSCRIBE")?;
            let packet_id = read_u16(b)?;
            let properties = props(p, b, PropertyContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                filters.push(read_string(b)?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol(
                    "UNSUBSCRIBE without topic filters".into(),
                ));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        }
        11 => {
            check_flags(first, 0, "UNSUBACK")?;
            let packet_id = read_u16(b)?;
            let properties = props(p, b, PropertyContext::UnsubAck)?;
            let reasons = if p.is_v5() {
                b.split_to(b.remaining())
                    .iter()
                    .map(|&byte| reason_code("UNSUBACK", byte))
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        12 => {
            check_flags(first, 0, "PINGREQ")?;
            Packet::PingReq
        }
        13 => {
            check_flags(first, 0, "PINGRESP")?;
            Packet::PingResp
        }
        14 => {
            check_flags(first, 0, "DISCONNECT")?;
            let mut d = Disconnect::default();
            if p.is_v5() && b.has_remaining() {
                d.reason = reason_code("DISCONNECT", read_u8(b)?)?;
                if b.has_remaining() {
                    d.properties = Properties::decode(b, PropertyContext::Disconnect)?;
                }
            }
            Packet::Disconnect(d)
        }
        15 if p.is_v5() => {
            check_flags(first, 0, "AUTH")?;
            let mut a = Auth::default();
            if b.has_remaining() {
                a.reason = reason_code("AUTH", read_u8(b)?)?;
                if b.has_remaining() {
                    a.properties = Properties::decode(b, PropertyContext::Auth)?;
                }
            }
            Packet::Auth(a)
        }
        _ => {
            return Err(DecodeError::Malformed(format!(
                "unknown packet type {kind}"
            )));
        }
    };
    finished(&body, packet.name())?;
    Ok(packet)
}

fn decode_connect(b: &mut Bytes) -> Result<Connect, DecodeError> {
    let name = read_binary(b)?;
    let level = read_u8(b)?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        _ => {
            return Err(DecodeError::UnsupportedProtocol {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            });
        }
    };
    let flags = read_u8(b)?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT reserved flag is set".into(),
        ));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will".into(),
        ));
    }
    let will_qos =
        QoS::from_u8(will_qos).ok_or_else(|| DecodeError::Malformed("will QoS 3".into()))?;
    if protocol != Protocol::V5 && has_password && !has_username {
        // 3.1.1 [MQTT-3.1.2-22]; v5 allows a password alone.
        return Err(DecodeError::Malformed("password without user name".into()));
    }
    let keep_alive = read_u16(b)?;
    let properties = props(protocol, b, PropertyContext::Connect)?;
    let client_id = read_string(b)?;
    let will = if will_flag {
        let properties = props(protocol, b, PropertyContext::Will)?;
        let topic = read_string(b)?;
        let payload = read_binary(b)?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(read_string(b)?)
    } else {
        None
    };
    let password = if has_password {
        Some(read_binary(b)?)
    } else {
        None
    };
    finished(b, "CONNECT")?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties,
    })
}

fn decode_publish(first: u8, b: &mut Bytes, p: Protocol) -> Result<Publish, DecodeError> {
    let dup = first & 0x08 != 0;
    let qos = QoS::from_u8((first >> 1) & 0x03)
        .ok_or_else(|| DecodeError::Malformed("PUBLISH with QoS 3".into()))?;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::Malformed("PUBLISH QoS 0 with DUP set".into()));
    }
    let retain = first & 0x01 != 0;
    let topic = read_string(b)?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        let id = read_u16(b)?;
        if id == 0 {
            return Err(DecodeError::Protocol("PUBLISH with packet id 0".into()));
        }
        id
    };
    let properties = props(p, b, PropertyContext::Publish)?;
    let payload = b.split_to(b.remaining());
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload,
        properties,
    })
}

fn unknown_reason(packet: &str, byte: u8) -> DecodeError {
    DecodeError::Malformed(format!("{packet} with unknown reason code 0x{byte:02X}"))
}

fn reason_code<R: ReasonCode>(packet: &str, byte: u8) -> Result<R, DecodeError> {
    R::from_code(byte).ok_or_else(|| unknown_reason(packet, byte))
}

fn decode_pub_resp<R: ReasonCode>(b: &mut Bytes, p: Protocol) -> Result<PubResp<R>, DecodeError> {
    let packet_id = read_u16(b)?;
    let mut r = PubResp::ok(packet_id);
    if p.is_v5() && b.has_remaining() {
        r.reason = reason_code("PUBACK/PUBREC/PUBREL/PUBCOMP", read_u8(b)?)?;
        if b.has_remaining() {
            r.properties = Properties::decode(b, PropertyContext::PubResp)?;
        }
    }
    Ok(r)
}

fn decode_subscribe(b: &mut Bytes, p: Protocol) -> Result<Subscribe, DecodeError> {
    let packet_id = read_u16(b)?;
    if packet_id == 0 {
        return Err(DecodeError::Protocol("SUBSCRIBE with packet id 0".into()));
    }
    let properties = props(p, b, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while b.has_remaining() {
        let filter = read_string(b)?;
        let o = read_u8(b)?;
        let reserved = if p.is_v5() { 0xC0 } else { 0xFC };
        if o & reserved != 0 {
            return Err(DecodeError::Malformed(
                "SUBSCRIBE options use reserved bits".into(),
            ));
        }
        let qos = QoS::from_u8(o & 0x03)
            .ok_or_else(|| DecodeError::Malformed("SUBSCRIBE with QoS 3".into()))?;
        let retain_handling = (o >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3".into()));
        }
        filters.push((
            filter,
            SubOptions {
                qos,
                no_local: o & 0x04 != 0,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBSCRIBE without topic filters".into(),
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}
