//! What travels on a link between two nodes: 4-byte big-endian length-prefixed protobuf
//! messages (prost derive, no `.proto` needed), read with tokio-util's length-delimited codec.
//!
//! A link starts with a handshake proving both ends know the `distributed_cookie` without
//! sending it: the dialler's [`Hello`] (its name and a nonce), the listener's [`Challenge`]
//! (its name, a nonce, and proof over both nonces), the dialler's [`Proof`]. Then the dialler
//! sends [`Frame`]s; the listener only reads.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use crate::store::{MessageRecord, QueuedRecord, SubscriptionRecord};

/// The version of this protocol; a peer speaking another is refused.
pub const VERSION: u32 = 1;

/// The largest frame a node reads (a publish carries at most one MQTT payload, 256 MiB by the
/// protocol, but a cluster link is not the place for those; larger frames close the link).
pub const MAX_FRAME: usize = 64 << 20;

/// The dialler introduces itself.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// Its `nodename`.
    #[prost(string, tag = "1")]
    pub node: String,
    /// Fresh random bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub nonce: Vec<u8>,
    /// [`VERSION`].
    #[prost(uint32, tag = "3")]
    pub version: u32,
}

/// The listener answers: who it is, and that it knows the cookie.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Challenge {
    /// Its `nodename`.
    #[prost(string, tag = "1")]
    pub node: String,
    /// Fresh random bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub nonce: Vec<u8>,
    /// [`proof`] with role "listener".
    #[prost(bytes = "vec", tag = "3")]
    pub proof: Vec<u8>,
    /// Why the link is refused, if it is (then nothing else is valid).
    #[prost(string, optional, tag = "4")]
    pub refused: Option<String>,
}

/// The dialler proves it knows the cookie too.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Proof {
    /// [`proof`] with role "dialler".
    #[prost(bytes = "vec", tag = "1")]
    pub proof: Vec<u8>,
}

/// One unit of traffic after the handshake.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// What it carries.
    #[prost(oneof = "Body", tags = "1, 2, 3, 4, 5")]
    pub body: Option<Body>,
}

/// The kinds of traffic.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    /// A message published on the sending node, for the receiver's own subscribers (and, when
    /// retained, for its retained store).
    #[prost(message, tag = "1")]
    Publish(Publish),
    /// The dialler asks to join the receiver's cluster (`vmq-admin cluster join` on it).
    #[prost(message, tag = "2")]
    Join(Join),
    /// A client connected on the sender: the receiver lets go of its session.
    #[prost(message, tag = "3")]
    Claim(Claim),
    /// The answer to a [`Claim`], on the answering node's own link.
    #[prost(message, tag = "4")]
    Claimed(Claimed),
    /// The sender's connected clients, when it sees the receiver again after a split (with
    /// `allow_register_during_netsplit = on` a client id may have connected on both sides).
    #[prost(message, tag = "5")]
    Online(Online),
}

/// Connected clients.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Online {
    /// One per connected client.
    #[prost(message, repeated, tag = "1")]
    pub sessions: Vec<OnlineSession>,
    /// Whether this answers the receiver's own list (else the receiver answers with its own,
    /// so that both sides compare even if only one saw the other come back).
    #[prost(bool, tag = "2")]
    pub answer: bool,
}

/// A connected client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnlineSession {
    /// Its mountpoint.
    #[prost(string, tag = "1")]
    pub mountpoint: String,
    /// Its client id.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// When it connected (Unix ms).
    #[prost(uint64, tag = "3")]
    pub since_ms: u64,
}

/// A node claims a client's session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Claim {
    /// Matches the answer to the question.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The client's mountpoint.
    #[prost(string, tag = "2")]
    pub mountpoint: String,
    /// The client id.
    #[prost(string, tag = "3")]
    pub client_id: String,
    /// Whether the client starts clean (then nothing is handed over).
    #[prost(bool, tag = "4")]
    pub clean_start: bool,
}

/// A node let go of a client's session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Claimed {
    /// The [`Claim`]'s id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Whether it held the session.
    #[prost(bool, tag = "2")]
    pub found: bool,
    /// The session's subscriptions (when handed over).
    #[prost(message, repeated, tag = "3")]
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Its messages, in order (when handed over).
    #[prost(message, repeated, tag = "4")]
    pub queue: Vec<QueuedRecord>,
    /// Its session id (when handed over).
    #[prost(string, optional, tag = "5")]
    pub session_id: Option<String>,
}

/// A join request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    /// The joining node's cluster listener (where gossip and links reach it).
    #[prost(string, tag = "1")]
    pub addr: String,
    /// Whether the joining node wants the cluster's retained messages.
    #[prost(bool, tag = "2")]
    pub retained: bool,
}

/// A forwarded publish.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Publish {
    /// Its mountpoint.
    #[prost(string, tag = "1")]
    pub mountpoint: String,
    /// The message (the store's record: topic, payload, QoS, retain, v5 properties, expiry as
    /// wall-clock milliseconds, publisher).
    #[prost(message, optional, tag = "2")]
    pub message: Option<MessageRecord>,
    /// The share groups (`$share/<group>/<filter>`) the sender picked the receiver for: the
    /// receiver delivers to one of its members of each (and to its plain subscribers).
    #[prost(string, repeated, tag = "3")]
    pub groups: Vec<String>,
    /// A retained message for the receiver's retained store only (sent to a node that just
    /// joined): not delivered to anyone.
    #[prost(bool, tag = "4")]
    pub store_only: bool,
}

/// `sha256(role, cookie, first nonce, second nonce)`, each part length-prefixed.
pub fn proof(role: &str, cookie: &str, first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [role.as_bytes(), cookie.as_bytes(), first, second] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().to_vec()
}

/// Compares two proofs without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 16 fresh random bytes.
pub fn nonce() -> Vec<u8> {
    let mut n = Vec::with_capacity(16);
    n.extend_from_slice(&fastrand::u64(..).to_be_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    n.extend_from_slice(&(fastrand::u64(..) ^ now).to_be_bytes());
    n
}

/// Appends `message` as one frame (length, then the encoding).
pub fn put_frame(message: &impl prost::Message, out: &mut BytesMut) {
    let len = message.encoded_len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    // Cannot fail: the space was reserved.
    let _ = message.encode(out);
}

/// One frame as bytes.
pub fn frame(message: &impl prost::Message) -> BytesMut {
    let mut out = BytesMut::new();
    put_frame(message, &mut out);
    out
}

/// Decodes a frame's body as `M`, with a message naming what was expected.
pub fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::decode(bytes).map_err(|e| format!("undecodable {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_role_cookie_and_both_nonces() {
        let p = proof("listener", "vmq", b"a", b"b");
        assert!(same(&p, &proof("listener", "vmq", b"a", b"b")));
        assert!(!same(&p, &proof("dialler", "vmq", b"a", b"b")));
        assert!(!same(&p, &proof("listener", "other", b"a", b"b")));
        assert!(!same(&p, &proof("listener", "vmq", b"b", b"a")));
        // Length prefixes: moving bytes between parts changes the proof.
        assert!(!same(
            &proof("l", "ab", b"c", b""),
            &proof("l", "a", b"bc", b"")
        ));
        assert!(!same(&p, &p[..31]));
    }

    #[test]
    fn frames_are_length_prefixed() {
        let f = frame(&Proof { proof: vec![7; 3] });
        assert_eq!(&f[..4], &5u32.to_be_bytes());
        let back: Proof = decode(&f[4..], "proof").unwrap();
        assert_eq!(back.proof, vec![7; 3]);
        assert!(decode::<Proof>(&[0xff, 0xff], "proof").is_err());
    }
}
