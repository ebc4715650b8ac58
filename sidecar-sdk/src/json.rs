//! Events as JSON, in the proto3 JSON mapping, for log and analytics pipelines.
//!
//! An event renders the way protobuf renders a `google.protobuf.Any`: an object with an `"@type"`
//! key holding the type URL and the message's fields beside it. Timestamps are RFC 3339 strings,
//! bytes are base64, enums are their names, default values are omitted. Any protobuf runtime's
//! JSON parser (Go's `protojson`, Python's `json_format`, ...) reads it back.
//!
//! Rendering goes through prost-reflect and the descriptor set the proto crate was built from, so
//! the JSON always follows the `.proto` files.

use std::io;
use std::sync::LazyLock;

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::event::Event;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(vmq_sidecar_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set built by vmq-sidecar-proto is valid")
});

/// The descriptors of every event message (and `google.protobuf.Any`), for reflection.
pub fn descriptor_pool() -> &'static DescriptorPool {
    &POOL
}

/// Why an event could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The event holds a value the JSON mapping cannot express (e.g. a timestamp out of range).
    #[error("event cannot be rendered as JSON: {0}")]
    Render(#[from] serde_json::Error),
    /// The event did not re-decode against its descriptor.
    #[error("event does not match its descriptor: {0}")]
    Descriptor(#[from] prost::DecodeError),
    /// Writing failed.
    #[error("writing JSON failed: {0}")]
    Io(#[from] io::Error),
}

/// Renders events as JSON.
#[derive(Clone, Debug)]
pub struct JsonRenderer {
    any: MessageDescriptor,
    options: SerializeOptions,
}

impl Default for JsonRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonRenderer {
    /// The canonical proto3 JSON mapping: lowerCamelCase field names (`clientId`).
    pub fn new() -> Self {
        JsonRenderer {
            any: POOL
                .get_message_by_name("google.protobuf.Any")
                .expect("google.protobuf.Any is in the descriptor set"),
            options: SerializeOptions::new(),
        }
    }

    /// Uses the `.proto` field names (`client_id`) instead of lowerCamelCase; proto3 JSON
    /// parsers accept both.
    pub fn proto_field_names(mut self, yes: bool) -> Self {
        self.options = self.options.use_proto_field_name(yes);
        self
    }

    /// Writes the event as one JSON object (no newline) to `writer`.
    pub fn write(&self, writer: impl io::Write, event: &Event) -> Result<(), JsonError> {
        let mut ser = serde_json::Serializer::new(writer);
        match event {
            Event::Unknown { type_url, value } => {
                // Not expressible in proto3 JSON without the schema: keep it lossless.
                let v = serde_json::json!({
                    "@type": type_url,
                    "value": base64::engine::general_purpose::STANDARD.encode(value),
                });
                serde::Serialize::serialize(&v, &mut ser)?;
            }
            known => {
                let any =
                    DynamicMessage::decode(self.any.clone(), known.encode_any_to_vec().as_slice())?;
                any.serialize_with_options(&mut ser, &self.options)?;
            }
        }
        Ok(())
    }

    /// The event as a JSON string.
    pub fn to_string(&self, event: &Event) -> Result<String, JsonError> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, event)?;
        // serde_json writes UTF-8 only.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The event as a `serde_json::Value`.
    pub fn to_value(&self, event: &Event) -> Result<Value, JsonError> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, event)?;
        Ok(serde_json::from_slice(&out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::every_event;
    use bytes::Bytes;

    #[test]
    fn publish_in_proto3_json() {
        let json = JsonRenderer::new().to_value(&every_event()[2]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "@type": "type.googleapis.com/eventssidecar.v1.OnPublish",
                "timestamp": "2023-11-14T22:13:22.123456789Z",
                "username": "user-1",
                "clientId": "client-ü-1",
                "mountpoint": "mp/1",
                "qos": 1,
                "topic": "a/b/ü",
                "payload": "AAH+cGF5bG9hZP8=",
                "retain": true,
                "matchedAcl": {"name": "acl-1", "pattern": "a/+/#"},
                "sessionId": "2f1c9e5e-8d3b-4f7a-9c1d-1234567890ab",
                "node": "n1@10.0.0.1",
            })
        );
    }

    #[test]
    fn enums_maps_and_proto_names() {
        let r = JsonRenderer::new().proto_field_names(true);
        let gone = r.to_value(&every_event()[11]).unwrap();
        assert_eq!(gone["reason"], "REASON_TCP_CLOSED");
        assert_eq!(gone["client_id"], "client-ü-1");
        let reg = r.to_value(&every_event()[0]).unwrap();
        assert_eq!(reg["user_properties"]["ключ"], "значение");
        let failed = r.to_value(&every_event()[1]).unwrap();
        assert_eq!(
            failed["reason"],
            "REGISTRATION_FAILURE_REASON_INVALID_CREDENTIALS"
        );
    }

    #[test]
    fn every_event_renders_with_its_type() {
        let r = JsonRenderer::new();
        for e in every_event() {
            let s = r.to_string(&e).unwrap();
            assert!(!s.contains('\n'));
            let v: Value = serde_json::from_str(&s).unwrap();
            assert_eq!(v["@type"], e.type_url());
        }
    }

    #[test]
    fn unknown_events_are_lossless() {
        let e = Event::Unknown {
            type_url: "type.googleapis.com/x.New".into(),
            value: Bytes::from_static(&[1, 2, 3]),
        };
        let v = JsonRenderer::new().to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"@type": "type.googleapis.com/x.New", "value": "AQID"})
        );
    }

    #[test]
    fn out_of_range_timestamp_is_an_error_not_a_panic() {
        let mut e = every_event().remove(9);
        if let Event::OnClientWakeUp(m) = &mut e {
            m.timestamp = Some(vmq_sidecar_proto::Timestamp {
                seconds: i64::MAX,
                nanos: -5,
            });
        }
        let _ = JsonRenderer::new().to_string(&e);
    }
}
