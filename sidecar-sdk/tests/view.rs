//! The borrowed view against the owned decoder, field for field: on valid events, on values
//! made of protobuf-looking fields of every tag and wire type (wrong wire types, repeated and
//! unknown fields, groups), on truncated and corrupted encodings, and on plain garbage. Both must
//! accept the same inputs and, when they do, agree on every field.

use bytes::{BufMut, Bytes};
use proptest::prelude::*;
use prost::Message;
use vmq_sidecar_sdk::proto::Any;
use vmq_sidecar_sdk::testing::every_event;
use vmq_sidecar_sdk::{Event, EventView, HOOKS};

mod common;
use common::event_strategy;

/// Decodes `any` both ways and checks they agree.
fn agree(any: &[u8]) -> Result<(), TestCaseError> {
    let frame = Bytes::copy_from_slice(any);
    let owned = Event::decode_any(frame.clone());
    let view = EventView::decode_any(&frame);
    match (owned, view) {
        (Ok(event), Ok(view)) => {
            prop_assert_eq!(&view.to_event(), &event);
            prop_assert_eq!(&view.to_event_in(&frame), &event);
            prop_assert_eq!(view.hook(), event.hook());
            prop_assert_eq!(view.client_id(), event.client_id());
            prop_assert_eq!(view.mountpoint(), event.mountpoint());
            prop_assert_eq!(view.username(), event.username());
            prop_assert_eq!(view.session_id(), event.session_id());
            prop_assert_eq!(view.timestamp(), event.timestamp().copied());
            prop_assert_eq!(
                view.message(),
                event.message().map(|(t, p)| (t, p.as_ref()))
            );
        }
        (Err(_), Err(_)) => {}
        (owned, view) => prop_assert!(
            false,
            "owned {:?} but view {:?} for {}",
            owned.map(|e| e.hook()),
            view.map(|v| v.hook()),
            hex::encode(any)
        ),
    }
    Ok(())
}

fn type_url(i: usize) -> String {
    every_event()[i].type_url().to_owned()
}

/// One protobuf field with any tag (known, unknown, 0) and wire type (valid or not), followed by
/// content that fits the wire type or does not.
fn field_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        0u32..14,
        0u32..8,
        prop_oneof![
            // A varint (possibly over 10 bytes when high bits are set throughout).
            any::<u64>().prop_map(|v| {
                let mut b = Vec::new();
                prost::encoding::encode_varint(v, &mut b);
                b
            }),
            // A length-delimited body: text, bytes or nested fields (timestamps, ACLs, topics).
            "[a-zü/]{0,12}".prop_map(|s| framed(s.as_bytes())),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| framed(&b)),
            proptest::collection::vec((1u32..4, 0u64..300), 0..4).prop_map(|fs| {
                let mut inner = Vec::new();
                for (tag, v) in fs {
                    prost::encoding::encode_varint(u64::from(tag << 3), &mut inner);
                    prost::encoding::encode_varint(v, &mut inner);
                }
                framed(&inner)
            }),
            proptest::collection::vec(any::<u8>(), 0..9),
        ],
    )
        .prop_map(|(tag, wire, content)| {
            let mut b = Vec::new();
            prost::encoding::encode_varint(u64::from(tag << 3 | wire), &mut b);
            b.extend(content);
            b
        })
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::encode_varint(body.len() as u64, &mut b);
    b.extend_from_slice(body);
    b
}

fn any_bytes(type_url: String, value: Vec<u8>) -> Vec<u8> {
    Any { type_url, value }.encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn valid_events_view_identically(event in event_strategy()) {
        let bytes = event.encode_any_to_vec();
        let view = EventView::decode_any(&bytes).unwrap();
        prop_assert_eq!(view.to_event(), event);
        agree(&bytes)?;
    }

    #[test]
    fn protobuf_looking_values_agree(
        i in 0..13usize,
        fields in proptest::collection::vec(field_strategy(), 0..8),
    ) {
        agree(&any_bytes(type_url(i), fields.concat()))?;
    }

    #[test]
    fn valid_events_with_extra_fields_agree(
        event in event_strategy(),
        extra in proptest::collection::vec(field_strategy(), 0..4),
    ) {
        // Extra fields appended to a valid value: duplicates merge or win, unknown ones skip.
        let mut value = event.to_any().value;
        value.extend(extra.concat());
        agree(&any_bytes(event.type_url().to_owned(), value))?;
    }

    #[test]
    fn truncated_and_corrupted_encodings_agree(
        event in event_strategy(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let bytes = event.encode_any_to_vec();
        let mut cut_bytes = bytes[..cut.index(bytes.len() + 1)].to_vec();
        agree(&cut_bytes)?;
        // The value alone truncated, inside a well-formed Any.
        let value = event.to_any().value;
        let short = value[..cut.index(value.len() + 1)].to_vec();
        agree(&any_bytes(event.type_url().to_owned(), short))?;
        for (at, byte) in flips {
            if !cut_bytes.is_empty() {
                let i = at.index(cut_bytes.len());
                cut_bytes[i] = byte;
            }
        }
        agree(&cut_bytes)?;
    }

    #[test]
    fn garbage_agrees(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes)?;
    }
}

#[test]
fn every_hook_has_a_view() {
    for (event, hook) in every_event().into_iter().zip(HOOKS) {
        let bytes = event.encode_any_to_vec();
        let view = EventView::decode_any(&bytes).unwrap();
        assert_eq!(view.hook(), hook);
        assert_eq!(view.hook_index().map(|i| HOOKS[i]), Some(hook));
    }
}

#[test]
fn repeated_fields_iterate_in_wire_order_and_merge_as_protobuf() {
    use vmq_sidecar_sdk::proto::{OnRegister, OnUnsubscribe};
    let unsubscribe = OnUnsubscribe {
        topics: vec!["a/1".into(), "b/ü".into(), "c/#".into()],
        ..Default::default()
    };
    let mut value = unsubscribe.encode_to_vec();
    // An unknown field between two more topics: skipped by the iteration.
    value.put_slice(&[0x78, 0x01]); // field 15, varint 1
    prost::encoding::string::encode(5, &"d".to_owned(), &mut value);
    let bytes = any_bytes(type_url(4), value);
    let EventView::OnUnsubscribe(view) = EventView::decode_any(&bytes).unwrap() else {
        panic!("not an unsubscribe");
    };
    assert_eq!(view.topics.len(), 4);
    let topics: Vec<&str> = view.topics.iter().collect();
    assert_eq!(topics, ["a/1", "b/ü", "c/#", "d"]);

    // A map with a repeated key: both entries iterate, the owned map keeps the last.
    let mut value = Vec::new();
    for (k, v) in [("k", "1"), ("x", "y"), ("k", "2")] {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, &k.to_owned(), &mut entry);
        prost::encoding::string::encode(2, &v.to_owned(), &mut entry);
        prost::encoding::bytes::encode(7, &entry, &mut value);
    }
    let bytes = any_bytes(type_url(0), value);
    let view = EventView::decode_any(&bytes).unwrap();
    let EventView::OnRegister(register) = view else {
        panic!("not a register");
    };
    let entries: Vec<_> = register.user_properties.iter().collect();
    assert_eq!(entries, [("k", "1"), ("x", "y"), ("k", "2")]);
    let Event::OnRegister(OnRegister {
        user_properties, ..
    }) = view.to_event()
    else {
        unreachable!()
    };
    assert_eq!(user_properties["k"], "2");
    assert_eq!(user_properties.len(), 2);
}

#[test]
fn payloads_are_borrowed_from_the_frame() {
    let event = vmq_sidecar_sdk::testing::publish(4096);
    let frame = Bytes::from(event.encode_any_to_vec());
    let view = EventView::decode_any(&frame).unwrap();
    let (_, payload) = view.message().unwrap();
    let inside = |p: &[u8]| {
        let (start, at) = (frame.as_ptr() as usize, p.as_ptr() as usize);
        at >= start && at + p.len() <= start + frame.len()
    };
    assert!(inside(payload));
    let owned = view.to_event_in(&frame);
    assert!(
        inside(owned.message().unwrap().1),
        "to_event_in copied the payload"
    );
}
