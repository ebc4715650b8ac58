//! Packets to bytes. `encoded_len` and `encode_packet` walk the same structure, so a packet's
//! size is known (and checked against the peer's maximum) before a byte is written.

use bytes::BufMut;

use super::*;

fn props_len(p: Protocol, props: &Properties) -> usize {
    if p.is_v5() { props.wire_len() } else { 0 }
}

/// The remaining length (body size) of `packet` for protocol `p`.
fn body_len(packet: &Packet, p: Protocol) -> usize {
    match packet {
        Packet::Connect(c) => {
            let name = if c.protocol == Protocol::V31 { 6 } else { 4 };
            let mut n = 2 + name + 1 + 1 + 2 + props_len(c.protocol, &c.properties);
            n += 2 + c.client_id.len();
            if let Some(w) = &c.will {
                n += props_len(c.protocol, &w.properties) + 2 + w.topic.len() + 2 + w.payload.len();
            }
            n += c.username.as_ref().map_or(0, |u| 2 + u.len());
            n += c.password.as_ref().map_or(0, |pw| 2 + pw.len());
            n
        }
        Packet::ConnAck(c) => 2 + props_len(p, &c.properties),
        Packet::Publish(m) => PublishRef::from(m).body_len(p),
        Packet::PubAck(r) | Packet::PubRec(r) => pub_resp_len(r, p),
        Packet::PubRel(r) | Packet::PubComp(r) => pub_resp_len(r, p),
        Packet::Subscribe(s) => {
            2 + props_len(p, &s.properties)
                + s.filters
                    .iter()
                    .map(|(f, _)| 2 + f.len() + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props_len(p, &s.properties) + s.reasons.len(),
        Packet::Unsubscribe(u) => {
            2 + props_len(p, &u.properties) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if p.is_v5() {
                u.properties.wire_len() + u.reasons.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => reason_and_props_len(p, d.reason.code(), &d.properties),
        Packet::Auth(a) => reason_and_props_len(p, a.reason.code(), &a.properties),
    }
}

fn pub_resp_len<R: ReasonCode>(r: &PubResp<R>, p: Protocol) -> usize {
    if !p.is_v5() || (r.reason == R::SUCCESS && r.properties.is_empty()) {
        2
    } else if r.properties.is_empty() {
        3
    } else {
        3 + r.properties.wire_len()
    }
}

fn reason_and_props_len(p: Protocol, reason: u8, props: &Properties) -> usize {
    if !p.is_v5() || (reason == 0 && props.is_empty()) {
        0
    } else if props.is_empty() {
        1
    } else {
        1 + props.wire_len()
    }
}

/// A PUBLISH whose topic, payload and properties are borrowed: how a subscriber's connection
/// writes a shared message without first copying its topic into a [`Publish`].
#[derive(Clone, Copy, Debug)]
pub struct PublishRef<'a> {
    /// Redelivery flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic (empty when a v5 topic alias stands for it).
    pub topic: &'a str,
    /// Packet id; ignored for QoS 0.
    pub packet_id: u16,
    /// Payload.
    pub payload: &'a Bytes,
    /// v5 properties (not written for v3).
    pub properties: &'a Properties,
}

impl<'a> From<&'a Publish> for PublishRef<'a> {
    fn from(m: &'a Publish) -> Self {
        PublishRef {
            dup: m.dup,
            qos: m.qos,
            retain: m.retain,
            topic: &m.topic,
            packet_id: m.packet_id,
            payload: &m.payload,
            properties: &m.properties,
        }
    }
}

impl PublishRef<'_> {
    fn body_len(&self, p: Protocol) -> usize {
        2 + self.topic.len()
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + props_len(p, self.properties)
            + self.payload.len()
    }

    fn first_byte(&self) -> u8 {
        0x30 | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    fn put_body(&self, p: Protocol, buf: &mut impl BufMut) {
        write_string(self.topic, buf);
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.packet_id);
        }
        put_props(p, self.properties, buf);
        buf.put_slice(self.payload);
    }

    /// Total size of the encoded packet, fixed header included.
    pub fn encoded_len(&self, p: Protocol) -> usize {
        let body = self.body_len(p);
        1 + varint_len(body as u32) + body
    }

    /// Writes the packet for a connection speaking protocol `p`; the same bytes as
    /// [`encode_packet`] of the owned [`Publish`].
    pub fn encode(&self, p: Protocol, buf: &mut impl BufMut) {
        buf.put_u8(self.first_byte());
        write_varint(self.body_len(p) as u32, buf);
        self.put_body(p, buf);
    }

    /// An owned copy (for traces and tests).
    pub fn to_publish(&self) -> Publish {
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.to_owned(),
            packet_id: self.packet_id,
            payload: self.payload.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// Total size of the encoded packet, fixed header included.
pub fn encoded_len(packet: &Packet, p: Protocol) -> usize {
    let body = body_len(packet, p);
    1 + varint_len(body as u32) + body
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(m) => PublishRef::from(m).first_byte(),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn put_props(p: Protocol, props: &Properties, buf: &mut impl BufMut) {
    if p.is_v5() {
        props.encode(buf);
    }
}

/// Writes `packet` for a connection speaking protocol `p`.
pub fn encode_packet(packet: &Packet, p: Protocol, buf: &mut impl BufMut) {
    buf.put_u8(first_byte(packet));
    write_varint(body_len(packet, p) as u32, buf);
    match packet {
        Packet::Connect(c) => {
            if c.protocol == Protocol::V31 {
                write_string("MQIsdp", buf);
            } else {
                write_string("MQTT", buf);
            }
            buf.put_u8(c.protocol.level());
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            buf.put_u8(flags);
            buf.put_u16(c.keep_alive);
            put_props(c.protocol, &c.properties, buf);
            write_string(&c.client_id, buf);
            if let Some(w) = &c.will {
                put_props(c.protocol, &w.properties, buf);
                write_string(&w.topic, buf);
                write_binary(&w.payload, buf);
            }
            if let Some(u) = &c.username {
                write_string(u, buf);
            }
            if let Some(pw) = &c.password {
                write_binary(pw, buf);
            }
        }
        Packet::ConnAck(c) => {
            buf.put_u8(u8::from(c.session_present));
            buf.put_u8(if p.is_v5() {
                c.code.code()
            } else {
                c.code.v3_code()
            });
            put_props(p, &c.properties, buf);
        }
        Packet::Publish(m) => PublishRef::from(m).put_body(p, buf),
        Packet::PubAck(r) | Packet::PubRec(r) => put_pub_resp(r, p, buf),
        Packet::PubRel(r) | Packet::PubComp(r) => put_pub_resp(r, p, buf),
        Packet::Subscribe(s) => {
            buf.put_u16(s.packet_id);
            put_props(p, &s.properties, buf);
            for (f, o) in &s.filters {
                write_string(f, buf);
                buf.put_u8(
                    o.qos as u8
                        | (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4),
                );
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.packet_id);
            put_props(p, &s.properties, buf);
            for r in &s.reasons {
                buf.put_u8(if p.is_v5() { r.code() } else { r.v3_code() });
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id);
            put_props(p, &u.properties, buf);
            for f in &u.filters {
                write_string(f, buf);
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id);
            if p.is_v5() {
                u.properties.encode(buf);
                for r in &u.reasons {
                    buf.put_u8(r.code());
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason, properties }) => {
            put_reason_and_props(p, reason.code(), properties, buf)
        }
        Packet::Auth(Auth { reason, properties }) => {
            put_reason_and_props(p, reason.code(), properties, buf)
        }
    }
}

fn put_pub_resp<R: ReasonCode>(r: &PubResp<R>, p: Protocol, buf: &mut impl BufMut) {
    buf.put_u16(r.packet_id);
    let len = pub_resp_len(r, p);
    if len >= 3 {
        buf.put_u8(r.reason.code());
    }
    if len > 3 {
        r.properties.encode(buf);
    }
}

fn put_reason_and_props(p: Protocol, reason: u8, properties: &Properties, buf: &mut impl BufMut) {
    let len = reason_and_props_len(p, reason, properties);
    if len >= 1 {
        buf.put_u8(reason);
    }
    if len > 1 {
        properties.encode(buf);
    }
}
