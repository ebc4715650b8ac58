//! A blocking reader for sidecars that do not use tokio: an `Iterator` of events over any
//! [`std::io::Read`] (a `std::net::TcpStream`, a file of captured frames, stdin, ...).

use std::io::{self, Read};

use bytes::BytesMut;

use crate::codec::{CodecError, EventCodec};
use crate::event::Event;

/// How much the reader asks of the underlying `Read` at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Iterates over the events of a byte stream, with the same framing rules as the async codec.
///
/// Items are `Ok(event)`, or `Err(e)`: a frame that did not decode (`!e.is_fatal()`, iteration
/// continues with the next frame), or a fatal error (oversized length, truncated frame, I/O
/// error), after which the iterator ends. A clean end of input ends it too.
#[derive(Debug)]
pub struct EventReader<R> {
    reader: R,
    codec: EventCodec,
    buf: BytesMut,
    done: bool,
}

impl<R: Read> EventReader<R> {
    /// Reads from `reader` with a default [`EventCodec`].
    pub fn new(reader: R) -> Self {
        Self::with_codec(reader, EventCodec::new())
    }

    /// Reads from `reader` with the given codec (maximum frame length, stats).
    pub fn with_codec(reader: R, codec: EventCodec) -> Self {
        EventReader {
            reader,
            codec,
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Reads more input into the buffer; `Ok(0)` at end of input.
    fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let result = loop {
            match self.reader.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }
}

impl<R: Read> Iterator for EventReader<R> {
    type Item = Result<Event, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.codec.decode_frame(&mut self.buf) {
                Ok(Some(item)) => return Some(item.map_err(CodecError::from)),
                Ok(None) => {}
                Err(fatal) => {
                    self.done = true;
                    return Some(Err(fatal));
                }
            }
            match self.fill() {
                Ok(0) => {
                    self.done = true;
                    use tokio_util::codec::Decoder;
                    return match self.codec.decode_eof(&mut self.buf) {
                        Ok(Some(event)) => Some(Ok(event)),
                        Ok(None) => None,
                        Err(e) => Some(Err(e)),
                    };
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::every_event;
    use tokio_util::codec::Encoder;

    /// A reader that hands out at most `n` bytes per call, like a slow socket.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn wire() -> Vec<u8> {
        let mut codec = EventCodec::new();
        let mut buf = BytesMut::new();
        for e in every_event() {
            codec.encode(&e, &mut buf).unwrap();
        }
        buf.to_vec()
    }

    #[test]
    fn reads_every_event_in_any_chunking() {
        let wire = wire();
        for chunk in [1, 3, 7, 100, usize::MAX] {
            let events: Vec<_> = EventReader::new(Trickle(&wire, chunk))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(events, every_event(), "chunk {chunk}");
        }
    }

    #[test]
    fn continues_after_a_bad_frame_and_reports_truncation() {
        let mut wire = vec![0, 0, 0, 2, 0xff, 0xff];
        wire.extend(self::wire());
        wire.extend([0, 0, 0, 9, 1]);
        let items: Vec<_> = EventReader::new(Trickle(&wire, 5)).collect();
        assert_eq!(items.len(), 1 + 13 + 1);
        assert!(matches!(&items[0], Err(e) if !e.is_fatal()));
        assert!(matches!(
            items.last(),
            Some(Err(CodecError::Truncated {
                expected: Some(9),
                buffered: 1
            }))
        ));
    }
}
