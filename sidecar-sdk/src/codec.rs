//! The frame codec: a `u32` big-endian length, then that many bytes of a serialized
//! `google.protobuf.Any`.
//!
//! Framing is tokio-util's [`LengthDelimitedCodec`], so partial and coalesced input are handled
//! the way every tokio codec handles them: one read may hold many frames or a piece of one. This
//! is what the seed's Go example gets wrong (it treats one read as one frame).
//!
//! Two kinds of failure are kept apart, because they call for different reactions:
//! - a frame whose bytes do not decode ([`FrameError`]) is reported and skipped: its boundary is
//!   known, so the stream stays in sync and the next frame decodes normally;
//! - a length over the limit, a truncated frame at EOF or an I/O error ([`CodecError`] other than
//!   [`CodecError::Frame`]) means the stream cannot be trusted: the connection must be closed.

use std::io;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, Encoder, FramedRead, LengthDelimitedCodec};

use crate::event::{Event, EventDecodeError};
use crate::stats::{FrameCounters, Stats};

/// The default maximum frame length: 16 MiB, enough for any event of a broker whose
/// `max_message_size` is at its usual values, small enough that a garbage length prefix cannot
/// make a sidecar reserve gigabytes.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// Length of the frame header.
const HEADER_LEN: usize = 4;

/// tokio-util's length-delimited framing as the wire contract has it: `u32` big-endian prefix.
fn framing(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(HEADER_LEN)
        .big_endian()
        .max_frame_length(max)
        .new_codec()
}

/// A frame that was read completely but does not hold a valid event. Recoverable: the stream
/// continues with the next frame.
#[derive(Debug, thiserror::Error)]
#[error("frame of {length} bytes skipped: {source}")]
pub struct FrameError {
    /// Length of the frame body.
    pub length: usize,
    /// Why its content did not decode.
    #[source]
    pub source: EventDecodeError,
}

/// Everything that can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// One frame did not decode; the stream is still in sync (see [`CodecError::is_fatal`]).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A length prefix over the configured maximum: the peer is not speaking this protocol or is
    /// misbehaving. Fatal: close the connection.
    #[error("frame length {length} exceeds the maximum frame length of {max} bytes")]
    FrameTooLarge {
        /// The length the prefix announced.
        length: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame. Fatal.
    #[error(
        "stream ended inside a frame: {buffered} bytes of a {}-byte frame received",
        expected.map_or_else(|| "?".to_owned(), |n| n.to_string())
    )]
    Truncated {
        /// The frame's announced length, when its header was complete.
        expected: Option<usize>,
        /// How many bytes of it had arrived.
        buffered: usize,
    },
    /// An event to encode is larger than the maximum frame length.
    #[error("event of {length} bytes exceeds the maximum frame length of {max} bytes")]
    EventTooLarge {
        /// Encoded length of the event.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The underlying reader or writer failed. Fatal.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// Whether the stream must be abandoned. Only [`CodecError::Frame`] is recoverable.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CodecError::Frame(_))
    }
}

/// Splits a byte stream into frames: the body of each non-empty frame as `Bytes` (a slice of
/// the read buffer, not a copy). Zero-length frames are skipped (upstream sends them for events
/// it could not encode); a length over the limit is refused before anything is buffered. The
/// base of [`EventCodec`], and what a sidecar uses to decode [`crate::EventView`]s itself.
#[derive(Debug)]
pub struct FrameCodec {
    framing: LengthDelimitedCodec,
    max_frame_length: usize,
    /// Length of the frame whose header `framing` has consumed and whose body is incomplete.
    pending: Option<usize>,
    /// The shared counters, and which copy of the per-frame ones this codec uses.
    stats: Option<(Arc<Stats>, usize)>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with [`DEFAULT_MAX_FRAME_LENGTH`].
    pub fn new() -> Self {
        Self::with_max_frame_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// A codec that refuses frames longer than `max` bytes (body, without the prefix).
    pub fn with_max_frame_length(max: usize) -> Self {
        let max = max.min(u32::MAX as usize);
        FrameCodec {
            framing: framing(max),
            max_frame_length: max,
            pending: None,
            stats: None,
        }
    }

    /// Counts frames, bytes and skipped frames into `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        let shard = stats.shard();
        self.stats = Some((stats, shard));
        self
    }

    /// The maximum frame length this codec accepts and produces.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    fn counters(&self) -> Option<&FrameCounters> {
        self.stats.as_ref().map(|(s, shard)| s.frames(*shard))
    }

    /// Counts a frame that did not decode (the caller decodes the frames).
    pub(crate) fn count_decode_error(&self) {
        if let Some(c) = self.counters() {
            Stats::add(&c.decode_errors, 1);
        }
    }

    /// The next non-empty frame's body: `Ok(None)` when more input is needed, `Err(..)` when the
    /// stream is broken.
    #[inline]
    pub fn next_frame(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        loop {
            if self.pending.is_none() {
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                if length > self.max_frame_length {
                    return Err(CodecError::FrameTooLarge {
                        length: length as u64,
                        max: self.max_frame_length,
                    });
                }
                self.pending = Some(length);
            }
            let Some(frame) = self.framing.decode(src)? else {
                return Ok(None);
            };
            self.pending = None;
            let length = frame.len();
            if let Some(c) = self.counters() {
                Stats::add(&c.bytes, (HEADER_LEN + length) as u64);
                if length == 0 {
                    Stats::add(&c.skipped_frames, 1);
                } else {
                    Stats::add(&c.frames, 1);
                }
            }
            if length > 0 {
                return Ok(Some(frame.freeze()));
            }
        }
    }

    /// At end of input: an error if a frame was left incomplete.
    pub(crate) fn check_eof(&mut self, src: &mut BytesMut) -> Result<(), CodecError> {
        if src.is_empty() && self.pending.is_none() {
            return Ok(());
        }
        let err = CodecError::Truncated {
            expected: self.pending,
            buffered: src.len(),
        };
        src.clear();
        self.pending = None;
        self.framing = framing(self.max_frame_length);
        Err(err)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        self.next_frame(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.next_frame(src)? {
            Some(frame) => Ok(Some(frame)),
            None => self.check_eof(src).map(|()| None),
        }
    }
}

/// Decodes frames into [`Event`]s and encodes events into frames.
///
/// As a `Decoder<Item = Event>`, a frame that does not decode is returned as
/// `Err(CodecError::Frame(..))` after being consumed, so calling `decode` again continues with the
/// next frame. Note that tokio-util's `FramedRead` ends its stream after any error: to keep
/// reading past bad frames with `FramedRead`, use [`read_events`] (or [`LenientEventCodec`]).
#[derive(Debug, Default)]
pub struct EventCodec {
    frames: FrameCodec,
}

impl EventCodec {
    /// A codec with [`DEFAULT_MAX_FRAME_LENGTH`].
    pub fn new() -> Self {
        Self::with_max_frame_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// A codec that refuses frames longer than `max` bytes (body, without the prefix).
    pub fn with_max_frame_length(max: usize) -> Self {
        EventCodec {
            frames: FrameCodec::with_max_frame_length(max),
        }
    }

    /// Counts frames, bytes, decode errors and skipped frames into `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.frames = self.frames.with_stats(stats);
        self
    }

    /// The maximum frame length this codec accepts and produces.
    pub fn max_frame_length(&self) -> usize {
        self.frames.max_frame_length
    }

    /// Decodes the next frame: `Ok(None)` when more input is needed, `Ok(Some(Err(..)))` for a
    /// frame that was consumed but did not decode, `Err(..)` when the stream is broken.
    #[inline]
    pub fn decode_frame(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Result<Event, FrameError>>, CodecError> {
        let Some(frame) = self.frames.next_frame(src)? else {
            return Ok(None);
        };
        let length = frame.len();
        Ok(Some(Event::decode_any(frame).map_err(|source| {
            self.frames.count_decode_error();
            FrameError { length, source }
        })))
    }

    /// At end of input: an error if a frame was left incomplete.
    fn check_eof(&mut self, src: &mut BytesMut) -> Result<(), CodecError> {
        self.frames.check_eof(src)
    }

    /// The framing underneath (limits and stats kept).
    pub(crate) fn into_frames(self) -> FrameCodec {
        self.frames
    }
}

impl Decoder for EventCodec {
    type Item = Event;
    type Error = CodecError;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        match self.decode_frame(src)? {
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(frame)) => Err(frame.into()),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Event>, CodecError> {
        match self.decode(src)? {
            Some(event) => Ok(Some(event)),
            None => self.check_eof(src).map(|()| None),
        }
    }
}

impl Encoder<&Event> for EventCodec {
    type Error = CodecError;

    fn encode(&mut self, event: &Event, dst: &mut BytesMut) -> Result<(), CodecError> {
        let length = event.any_encoded_len();
        if length > self.max_frame_length() {
            return Err(CodecError::EventTooLarge {
                length,
                max: self.max_frame_length(),
            });
        }
        dst.reserve(HEADER_LEN + length);
        // Cannot truncate: max_frame_length is capped at u32::MAX.
        dst.put_u32(length as u32);
        event.encode_any(dst);
        Ok(())
    }
}

impl Encoder<Event> for EventCodec {
    type Error = CodecError;

    fn encode(&mut self, event: Event, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&event, dst)
    }
}

/// An [`EventCodec`] whose items are `Result<Event, FrameError>`: with `FramedRead`, a bad frame
/// becomes one `Err` item and the stream goes on; only fatal errors end it.
#[derive(Debug, Default)]
pub struct LenientEventCodec(pub EventCodec);

impl Decoder for LenientEventCodec {
    type Item = Result<Event, FrameError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        self.0.decode_frame(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.0.decode_frame(src)? {
            Some(item) => Ok(Some(item)),
            None => self.0.check_eof(src).map(|()| None),
        }
    }
}

/// A stream of events read from `reader`: `Ok(Ok(event))` per event, `Ok(Err(frame_error))` per
/// frame that did not decode, then at most one fatal `Err` that ends it.
pub type EventFrames<R> = FramedRead<R, LenientEventCodec>;

/// Reads events from any `AsyncRead` (a `TcpStream`, a file of captured frames, ...).
pub fn read_events<R: AsyncRead>(reader: R, codec: EventCodec) -> EventFrames<R> {
    FramedRead::new(reader, LenientEventCodec(codec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::every_event;
    use bytes::Bytes;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut codec = EventCodec::new();
        let mut wire = BytesMut::new();
        for event in every_event() {
            codec.encode(&event, &mut wire).unwrap();
        }
        let mut decoded = Vec::new();
        let mut buf = BytesMut::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(event) = codec.decode(&mut buf).unwrap() {
                decoded.push(event);
            }
        }
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert_eq!(decoded, every_event());
    }

    #[test]
    fn zero_length_frames_are_skipped_and_counted() {
        let stats = Arc::new(Stats::default());
        let mut codec = EventCodec::new().with_stats(stats.clone());
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame(&[]));
        codec.encode(&every_event()[0], &mut wire).unwrap();
        wire.extend_from_slice(&frame(&[]));
        wire.extend_from_slice(&frame(&[]));
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(every_event()[0].clone())
        );
        assert_eq!(codec.decode_eof(&mut wire).unwrap(), None);
        let s = stats.snapshot();
        assert_eq!((s.frames, s.skipped_frames, s.decode_errors), (1, 3, 0));
    }

    #[test]
    fn bad_frame_is_an_error_and_the_next_frame_decodes() {
        let stats = Arc::new(Stats::default());
        let mut codec = EventCodec::new().with_stats(stats.clone());
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame(&[0xff, 0xff, 0xff]));
        codec.encode(&every_event()[2], &mut wire).unwrap();
        let err = codec.decode(&mut wire).unwrap_err();
        assert!(!err.is_fatal(), "{err}");
        assert!(err.to_string().contains("frame of 3 bytes"), "{err}");
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(every_event()[2].clone())
        );
        assert_eq!(stats.snapshot().decode_errors, 1);
    }

    #[test]
    fn oversized_length_is_fatal_before_buffering() {
        let mut codec = EventCodec::with_max_frame_length(1024);
        let mut wire = BytesMut::from(&[0x00, 0x00, 0x04, 0x01][..]);
        let err = codec.decode(&mut wire).unwrap_err();
        assert!(err.is_fatal());
        assert!(matches!(
            err,
            CodecError::FrameTooLarge {
                length: 1025,
                max: 1024
            }
        ));
        assert_eq!(
            err.to_string(),
            "frame length 1025 exceeds the maximum frame length of 1024 bytes"
        );
    }

    #[test]
    fn truncated_frame_at_eof_is_fatal() {
        let mut codec = EventCodec::new();
        let full = {
            let mut w = BytesMut::new();
            codec.encode(&every_event()[0], &mut w).unwrap();
            w
        };
        // Header complete, body short.
        let mut wire = BytesMut::from(&full[..full.len() - 3]);
        assert_eq!(codec.decode(&mut wire).unwrap(), None);
        let err = codec.decode_eof(&mut wire).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::Truncated {
                    expected: Some(_),
                    ..
                }
            ),
            "{err}"
        );
        // Header incomplete.
        let mut wire = BytesMut::from(&full[..2]);
        let err = codec.decode_eof(&mut wire).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Truncated {
                expected: None,
                buffered: 2
            }
        ));
    }

    #[test]
    fn encoding_refuses_events_over_the_limit() {
        let mut codec = EventCodec::with_max_frame_length(64);
        let err = codec
            .encode(crate::testing::publish(100), &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, CodecError::EventTooLarge { max: 64, .. }));
    }

    #[test]
    fn decoded_payload_shares_the_frame_buffer() {
        let mut codec = EventCodec::new();
        let mut wire = BytesMut::new();
        codec
            .encode(crate::testing::publish(4096), &mut wire)
            .unwrap();
        let start = wire.as_ptr() as usize;
        let end = start + wire.len();
        let Some(Event::OnPublish(p)) = codec.decode(&mut wire).unwrap() else {
            panic!("not a publish")
        };
        let at = p.payload.as_ptr() as usize;
        assert!(at >= start && at < end, "payload was copied");
        assert_eq!(p.payload, Bytes::from(vec![0x5a; 4096]));
    }
}
