//! A blocking reader for sidecars that do not use tokio: an `Iterator` of events over any
//! [`std::io::Read`] (a `std::net::TcpStream`, a file of captured frames, stdin, ...), and
//! [`SequencedReader`], the same over a connection to a broker in at-least-once mode, which
//! acknowledges what was handled.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};

use crate::codec::{CodecError, EventCodec, FrameCodec, FrameError};
use crate::delivery::{BATCH_TYPE_URL, Sequence, Sequencing};
use crate::event::{Event, EventDecodeError};
use crate::view::EventView;

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
    frames: FrameCodec,
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
            frames: codec.into_frames(),
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

    /// The next frame; `before_wait` runs each time the reader is about to block for input.
    fn next_frame(
        &mut self,
        mut before_wait: impl FnMut(&mut R) -> io::Result<()>,
    ) -> Option<Result<Bytes, CodecError>> {
        while !self.done {
            match self.frames.next_frame(&mut self.buf) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(fatal) => {
                    self.done = true;
                    return Some(Err(fatal));
                }
            }
            let filled = before_wait(&mut self.reader).and_then(|()| self.fill());
            match filled {
                Ok(0) => {
                    self.done = true;
                    return self.frames.check_eof(&mut self.buf).err().map(Err);
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

    fn frame_error(&self, length: usize, source: EventDecodeError) -> CodecError {
        self.frames.count_decode_error();
        CodecError::Frame(FrameError { length, source })
    }
}

impl<R: Read> Iterator for EventReader<R> {
    type Item = Result<Event, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.next_frame(|_| Ok(()))? {
            Ok(frame) => {
                let length = frame.len();
                Event::decode_any(frame).map_err(|source| self.frame_error(length, source))
            }
            Err(e) => Err(e),
        })
    }
}

/// [`EventReader`] over a connection to a broker in at-least-once mode
/// (`vmq_events_sidecar.delivery = at_least_once`): each event comes with its [`Sequence`], and
/// an event counts as handled when the next one is asked for (or, with
/// [`SequencedReader::explicit_acks`], when its [`Sequence::ack`] is called). The reader writes
/// the acknowledgements back on the connection before it waits for input, and every 256
/// events. With a broker at most once, events come without a sequence and nothing is written.
#[derive(Debug)]
pub struct SequencedReader<S> {
    inner: EventReader<S>,
    seqs: Sequencing,
    /// The event returned last, acknowledged when the next is asked for.
    last: Option<Sequence>,
    explicit: bool,
}

impl<S: Read + Write> SequencedReader<S> {
    /// Reads events from `stream` (a `std::net::TcpStream` accepted from the broker).
    pub fn new(stream: S) -> Self {
        SequencedReader {
            inner: EventReader::new(stream),
            seqs: Sequencing::default(),
            last: None,
            explicit: false,
        }
    }

    /// Events are acknowledged only by [`Sequence::ack`] (e.g. after a commit), not when the
    /// next one is asked for.
    pub fn explicit_acks(mut self) -> Self {
        self.explicit = true;
        self
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }

    /// Writes the acknowledgement owed, if due (`eager`: about to wait for input).
    fn send_acks(seqs: &mut Sequencing, stream: &mut S, eager: bool) -> io::Result<()> {
        if seqs.ack_due(eager)
            && let Some(frame) = seqs.take_ack()
        {
            stream.write_all(&frame)?;
            stream.flush()?;
        }
        Ok(())
    }

    /// The next event and its sequence (`None` at most once); `Err` as [`EventReader`]'s items;
    /// `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<Result<(Event, Option<Sequence>), CodecError>> {
        if let Some(last) = self.last.take()
            && !self.explicit
        {
            last.ack();
        }
        loop {
            let seqs = &mut self.seqs;
            let frame = match self
                .inner
                .next_frame(|stream| Self::send_acks(seqs, stream, true))?
            {
                Ok(frame) => frame,
                Err(e) => return Some(Err(e)),
            };
            let length = frame.len();
            let result = match EventView::decode_any(&frame) {
                Ok(EventView::Unknown { type_url, value }) if type_url == BATCH_TYPE_URL => {
                    if self.seqs.start_batch(value) {
                        continue;
                    }
                    Err(EventDecodeError::BadBatch)
                }
                Ok(view) => Ok(view.to_event_in(&frame)),
                Err(e) => Err(e),
            };
            let seq = self.seqs.next();
            if let Err(e) = Self::send_acks(&mut self.seqs, &mut self.inner.reader, false) {
                return Some(Err(e.into()));
            }
            return Some(match result {
                Ok(event) => {
                    self.last.clone_from(&seq);
                    Ok((event, seq))
                }
                Err(source) => {
                    if let Some(seq) = seq.filter(|_| !self.explicit) {
                        seq.ack();
                    }
                    Err(self.inner.frame_error(length, source))
                }
            });
        }
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

    /// A connection: reads from a buffer, keeps what is written.
    struct Duplex<'a>(&'a [u8], Vec<u8>);
    impl Read for Duplex<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }
    impl Write for Duplex<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn batch(first_seq: u64, count: u32, resent: bool) -> Vec<u8> {
        crate::testing::batch_frame(3, 0, first_seq, count, resent)
    }

    #[test]
    fn the_sequenced_reader_numbers_events_and_acknowledges_what_was_handled() {
        let events = every_event();
        let mut codec = EventCodec::new();
        let mut wire = BytesMut::from(&batch(1, 2, false)[..]);
        codec.encode(&events[0], &mut wire).unwrap();
        codec.encode(&events[1], &mut wire).unwrap();
        wire.extend_from_slice(&batch(2, 2, true));
        codec.encode(&events[1], &mut wire).unwrap();
        codec.encode(&events[2], &mut wire).unwrap();
        let mut r = SequencedReader::new(Duplex(&wire, Vec::new()));
        let mut got = Vec::new();
        while let Some(item) = r.next_event() {
            let (event, seq) = item.unwrap();
            let seq = seq.expect("numbered");
            got.push((event.hook(), seq.seq, seq.resent));
        }
        assert_eq!(
            got,
            [
                ("on_register", 1, false),
                ("on_register_failed", 2, false),
                ("on_register_failed", 2, true),
                ("on_publish", 3, true),
            ]
        );
        // Everything handled: one acknowledgement, written before the reader waited (at EOF).
        assert_eq!(
            r.into_inner().1,
            crate::delivery::ack_frame(3, 0, 3).to_vec()
        );

        // Without batches (a broker at most once): no sequence, nothing written.
        let plain = self::wire();
        let mut r = SequencedReader::new(Duplex(&plain, Vec::new()));
        let mut n = 0;
        while let Some(item) = r.next_event() {
            assert!(item.unwrap().1.is_none());
            n += 1;
        }
        assert_eq!(n, 13);
        assert!(r.into_inner().1.is_empty());
    }
}
