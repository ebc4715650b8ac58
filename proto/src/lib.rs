//! The protobuf types of the VerneMQ events sidecar wire contract, package `eventssidecar.v1`.
//!
//! Every hook event the broker relays is one of these messages, packed in a
//! `google.protobuf.Any` whose `type_url` is `type.googleapis.com/eventssidecar.v1.<Name>`.
//! The `.proto` files in `eventssidecar/v1/` are the source of truth; they are compiled at build
//! time by protox and prost-build, so other languages can compile the very same files.
//!
//! Each message implements [`prost::Name`], so `OnPublish::type_url()` gives its type URL.

#![deny(missing_docs)]

/// The generated messages and enums of package `eventssidecar.v1`.
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/eventssidecar.v1.rs"));
}

pub use prost::Name;
pub use prost_types::{Any, Timestamp};
pub use v1::*;

/// The prefix every event type URL starts with.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/eventssidecar.v1.";

/// The protobuf package of every event message.
pub const PACKAGE: &str = "eventssidecar.v1";

/// The serialized `FileDescriptorSet` of every `.proto` file of this crate, with the well-known
/// types they use (`Timestamp`) and `google.protobuf.Any`. Feed it to a reflection library
/// (prost-reflect, ...) to work with events dynamically, e.g. to render them as JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/eventssidecar_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_use_the_googleapis_domain() {
        assert_eq!(
            OnClientWakeUp::type_url(),
            "type.googleapis.com/eventssidecar.v1.OnClientWakeUp"
        );
        assert_eq!(OnPublish::full_name(), "eventssidecar.v1.OnPublish");
        assert!(OnRegisterFailed::type_url().starts_with(TYPE_URL_PREFIX));
    }

    #[test]
    fn descriptor_set_holds_every_event_and_any() {
        use prost::Message;
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<_> = fds.file.iter().map(|f| f.name().to_owned()).collect();
        assert!(names.iter().any(|n| n == "google/protobuf/any.proto"));
        assert!(names.iter().any(|n| n == "google/protobuf/timestamp.proto"));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("eventssidecar/v1/on_"))
                .count(),
            13
        );
    }
}
