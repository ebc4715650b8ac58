//! The SDK for events sidecars: programs that receive the hook events a broker relays
//! (VerneMQ's `vmq_events_sidecar`, or this project's broker) over TCP.
//!
//! The wire format is a stream of frames, each a `u32` big-endian length followed by a serialized
//! `google.protobuf.Any` packing one event message of package `eventssidecar.v1`. This crate gives:
//! - [`Event`]: the typed events, decoded from and encoded to `Any`;
//! - [`EventCodec`]: a tokio-util `Decoder`/`Encoder` that handles partial and coalesced reads,
//!   skips zero-length frames, reports undecodable frames without losing sync, and refuses
//!   oversized lengths; [`EventReader`] does the same over a blocking `std::io::Read`;
//! - [`Server`]: a ready TCP server calling your [`Handler`] (or yielding a `Stream`), with
//!   graceful shutdown and [`Stats`];
//! - [`JsonRenderer`]: events in the proto3 JSON mapping, for log pipelines.
//!
//! ```no_run
//! use vmq_sidecar_sdk::{Event, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! Server::bind(vmq_sidecar_sdk::DEFAULT_ADDR)
//!     .await?
//!     .serve(|event: Event| async move {
//!         println!("{} from {:?}", event.hook(), event.client_id());
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod codec;
mod delivery;
mod event;
mod json;
mod reader;
mod server;
mod stats;
pub mod testing;
mod view;

/// The `bytes` crate the SDK's frames and payloads are made of, re-exported.
pub use bytes;
pub use codec::{
    CodecError, DEFAULT_MAX_FRAME_LENGTH, EventCodec, EventFrames, FrameCodec, FrameError,
    LenientEventCodec, read_events,
};
pub use delivery::{ACK_TYPE_URL, BATCH_TYPE_URL, Dedup, Sequence, ack_frame};
pub use event::{Event, EventDecodeError, HOOKS};
pub use json::{JsonError, JsonRenderer, descriptor_pool};
pub use reader::{EventReader, SequencedReader};
pub use server::{DEFAULT_ADDR, EventStream, Handler, Peer, Server};
pub use stats::{Stats, StatsSnapshot};
pub use view::{
    Element, EventView, MatchedAclView, OnClientGoneView, OnClientOfflineView, OnClientWakeUpView,
    OnDeliverView, OnDeliveryCompleteView, OnMessageDropView, OnOfflineMessageView, OnPublishView,
    OnRegisterFailedView, OnRegisterView, OnSessionExpiredView, OnSubscribeView, OnUnsubscribeView,
    Repeated, RepeatedIter, TopicInfoView,
};
/// The generated protobuf types, re-exported so sidecars need a single dependency.
pub use vmq_sidecar_proto as proto;

/// The README's Rust examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
