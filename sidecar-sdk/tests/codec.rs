//! The frame codec against the wire contract: the reference vector, every type with every field
//! set, and streams cut at arbitrary places.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use vmq_sidecar_sdk::proto::{OnClientWakeUp, Timestamp};
use vmq_sidecar_sdk::testing::every_event;
use vmq_sidecar_sdk::{CodecError, Event, EventCodec, EventReader};

mod common;
use common::event_strategy;

const WAKEUP_FRAME: &str = "000000480a33747970652e676f6f676c65617069732e636f6d2f6576656e747373\
696465636172\
2e76312e4f6e436c69656e7457616b65557012110a080880e2cfaa06100512026331220173";

fn wakeup() -> Event {
    OnClientWakeUp {
        timestamp: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        client_id: "c1".into(),
        mountpoint: String::new(),
        session_id: "s".into(),
        node: String::new(),
    }
    .into()
}

#[test]
fn reference_frame_decodes_to_the_reference_event() {
    let mut buf = BytesMut::from(hex::decode(WAKEUP_FRAME).unwrap().as_slice());
    let event = EventCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(event, wakeup());
    assert!(buf.is_empty());
}

#[test]
fn reference_event_encodes_to_the_reference_frame() {
    let mut buf = BytesMut::new();
    EventCodec::new().encode(wakeup(), &mut buf).unwrap();
    assert_eq!(hex::encode(&buf), WAKEUP_FRAME);
}

#[test]
fn every_type_roundtrips_with_every_field_set() {
    let mut codec = EventCodec::new();
    for event in every_event() {
        let mut buf = BytesMut::new();
        codec.encode(&event, &mut buf).unwrap();
        let back = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(back, event, "{}", event.hook());
        assert!(buf.is_empty());
        // Every field really is set: its proto3 encoding is larger than with any field cleared.
        assert!(!matches!(back, Event::Unknown { .. }));
    }
}

/// What a stream can hold: good events, zero-length frames and undecodable frames.
#[derive(Clone, Debug)]
enum Item {
    Good(Box<Event>),
    Empty,
    Garbage(Vec<u8>),
}

fn item_strategy() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => event_strategy().prop_map(|e| Item::Good(Box::new(e))),
        1 => Just(Item::Empty),
        // 0xff.. is never a valid Any: the first byte is a key with wire type 7.
        1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(|mut v| {
            v.insert(0, 0xff);
            Item::Garbage(v)
        }),
    ]
}

fn encode(items: &[Item]) -> Vec<u8> {
    let mut codec = EventCodec::new();
    let mut buf = BytesMut::new();
    for item in items {
        match item {
            Item::Good(e) => codec.encode(&**e, &mut buf).unwrap(),
            Item::Empty => buf.put_u32(0),
            Item::Garbage(g) => {
                buf.put_u32(g.len() as u32);
                buf.put_slice(g);
            }
        }
    }
    buf.to_vec()
}

/// What the decoder should yield: events in order, one error per garbage frame, nothing for
/// empty frames.
fn expected(items: &[Item]) -> Vec<Result<Event, ()>> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Good(e) => Some(Ok((**e).clone())),
            Item::Empty => None,
            Item::Garbage(_) => Some(Err(())),
        })
        .collect()
}

/// Feeds `wire` to one decoder in the given chunk sizes (cycled).
fn decode_in_chunks(wire: &[u8], chunks: &[usize]) -> Vec<Result<Event, ()>> {
    let mut codec = EventCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(CodecError::Frame(_)) => out.push(Err(())),
                Err(fatal) => panic!("fatal error on a valid stream: {fatal}"),
            }
        }
        if rest.is_empty() {
            break;
        }
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_decodes_identically(
        items in proptest::collection::vec(item_strategy(), 1..60),
        chunks in proptest::collection::vec(1..200usize, 1..20),
    ) {
        let wire = encode(&items);
        let want = expected(&items);
        prop_assert_eq!(&decode_in_chunks(&wire, &[wire.len()]), &want);
        prop_assert_eq!(&decode_in_chunks(&wire, &[1]), &want);
        prop_assert_eq!(&decode_in_chunks(&wire, &chunks), &want);
        let blocking: Vec<_> = EventReader::new(wire.as_slice())
            .map(|r| r.map_err(|e| assert!(!e.is_fatal(), "{e}")))
            .collect();
        prop_assert_eq!(&blocking, &want);
    }
}
