//! The at-least-once mode of a lane (`vmq_events_sidecar.delivery = at_least_once`): every
//! written event stays here, with its bytes, until the sidecar acknowledges it; a reconnect
//! writes what is left again, in order, before anything new.
//!
//! On the wire (see `proto/eventssidecar/v1/delivery.proto` and the README's wire contract):
//! a `Batch` frame before each run of event frames numbers them (epoch, lane, first sequence
//! number, count, re-sent or not); the sidecar answers on the same connection with `Ack` frames
//! (every event of the lane up to a sequence number is handled).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use vmq_sidecar_sdk::proto::{Ack, Any, Batch};

/// The type URL of the numbering frame.
pub const BATCH_TYPE_URL: &str = "type.googleapis.com/eventssidecar.v1.Batch";
/// The type URL of an acknowledgement.
pub const ACK_TYPE_URL: &str = "type.googleapis.com/eventssidecar.v1.Ack";
/// An acknowledgement frame is a few dozen bytes: anything far longer is not one.
const MAX_ACK_FRAME: usize = 1024;

/// Events written and not yet acknowledged, in sequence order.
#[derive(Debug)]
pub struct Unacked {
    batches: VecDeque<Written>,
    /// Frames at the front of the first batch already acknowledged.
    front_acked: usize,
    /// Frames in `batches` not acknowledged.
    len: usize,
    /// The sequence number the next event written gets (numbers start at 1).
    next_seq: u64,
    /// When the oldest unacknowledged event was first written, or acknowledgements last moved.
    progress_at: Instant,
}

/// A run of frames as it was written: its first sequence number, each frame's hook and length,
/// and the bytes (a slice of the backlog, shared: keeping it copies nothing).
#[derive(Debug)]
struct Written {
    first_seq: u64,
    frames: Vec<(u8, u32)>,
    bytes: Bytes,
    at: Instant,
}

/// What an acknowledgement released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Events per hook index.
    pub per_hook: [u64; 13],
    /// Events in all.
    pub events: u64,
    /// Sum over those events of the time from their (first) write to now.
    pub latency: Duration,
}

impl Default for Unacked {
    fn default() -> Self {
        Unacked {
            batches: VecDeque::new(),
            front_acked: 0,
            len: 0,
            next_seq: 1,
            progress_at: Instant::now(),
        }
    }
}

impl Unacked {
    /// Events waiting for an acknowledgement.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Numbers a run of frames about to be written and keeps it; returns its first sequence
    /// number.
    pub fn keep(&mut self, frames: &[(u8, u32)], bytes: Bytes) -> u64 {
        let first_seq = self.next_seq;
        self.next_seq += frames.len() as u64;
        if self.len == 0 {
            self.progress_at = Instant::now();
        }
        self.len += frames.len();
        self.batches.push_back(Written {
            first_seq,
            frames: frames.to_vec(),
            bytes,
            at: Instant::now(),
        });
        first_seq
    }

    /// Every event up to `seq` is handled: forgets them. An acknowledgement of events not yet
    /// written is refused (`None`): the sidecar is not speaking about this broker's events.
    pub fn ack(&mut self, seq: u64) -> Option<Released> {
        if seq >= self.next_seq {
            return None;
        }
        let mut released = Released::default();
        let now = Instant::now();
        while let Some(front) = self.batches.front() {
            let acked_to = seq.saturating_sub(front.first_seq - 1);
            let take = (acked_to as usize).min(front.frames.len());
            if take <= self.front_acked {
                break;
            }
            for (hook, _) in &front.frames[self.front_acked..take] {
                if let Some(n) = released.per_hook.get_mut(usize::from(*hook)) {
                    *n += 1;
                }
            }
            let n = (take - self.front_acked) as u64;
            released.events += n;
            released.latency += now.saturating_duration_since(front.at) * n as u32;
            self.len -= take - self.front_acked;
            if take == front.frames.len() {
                self.batches.pop_front();
                self.front_acked = 0;
            } else {
                self.front_acked = take;
                break;
            }
        }
        if released.events > 0 {
            self.progress_at = now;
        }
        Some(released)
    }

    /// The runs to write again on a new connection, oldest first: first sequence number, the
    /// frames and their bytes (what is acknowledged at the front left out).
    pub fn resend(&self) -> impl Iterator<Item = (u64, &[(u8, u32)], Bytes)> {
        self.batches.iter().enumerate().map(|(i, b)| {
            let skip = if i == 0 { self.front_acked } else { 0 };
            let offset: usize = b.frames[..skip].iter().map(|(_, l)| *l as usize).sum();
            (
                b.first_seq + skip as u64,
                &b.frames[skip..],
                b.bytes.slice(offset..),
            )
        })
    }

    /// Whether events have waited `limit` without any acknowledgement moving.
    pub fn stalled(&self, limit: Duration) -> bool {
        self.len > 0 && self.progress_at.elapsed() >= limit
    }

    /// Forgets everything (at shutdown), returning the hook index of every event forgotten.
    pub fn clear(&mut self) -> Vec<u8> {
        let mut hooks = Vec::with_capacity(self.len);
        for (i, b) in self.batches.drain(..).enumerate() {
            let skip = if i == 0 { self.front_acked } else { 0 };
            hooks.extend(b.frames[skip..].iter().map(|(h, _)| *h));
        }
        self.front_acked = 0;
        self.len = 0;
        hooks
    }
}

/// The `Batch` frame announcing `count` events from `first_seq`.
pub fn batch_frame(epoch: u64, lane: u32, first_seq: u64, count: usize, resent: bool) -> Bytes {
    let batch = Batch {
        epoch,
        lane,
        first_seq,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        resent,
    };
    let any = Any {
        type_url: BATCH_TYPE_URL.to_owned(),
        value: batch.encode_to_vec(),
    };
    let mut frame = BytesMut::with_capacity(4 + any.encoded_len());
    frame.extend_from_slice(&(any.encoded_len() as u32).to_be_bytes());
    any.encode(&mut frame)
        .unwrap_or_else(|_| unreachable!("the buffer was sized for it"));
    frame.freeze()
}

/// Why the sidecar's side of a connection cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// A frame far longer than an acknowledgement.
    #[error("sidecar sent a frame of {0} bytes (an acknowledgement is a few dozen)")]
    TooLong(usize),
    /// Not a protobuf `Any`, or an `Ack` that does not decode.
    #[error("sidecar sent a frame that does not decode: {0}")]
    Undecodable(String),
}

/// Takes the complete frames off the front of `inbox`: the acknowledgements of `epoch`/`lane`
/// (their sequence numbers, in order). Other types, and acknowledgements of another epoch or
/// lane (an earlier broker run), are skipped.
pub fn read_acks(inbox: &mut BytesMut, epoch: u64, lane: u32) -> Result<Vec<u64>, AckError> {
    let mut seqs = Vec::new();
    while inbox.len() >= 4 {
        let len = u32::from_be_bytes([inbox[0], inbox[1], inbox[2], inbox[3]]) as usize;
        if len > MAX_ACK_FRAME {
            return Err(AckError::TooLong(len));
        }
        if inbox.len() < 4 + len {
            break;
        }
        inbox.advance(4);
        let body = inbox.split_to(len);
        if len == 0 {
            continue;
        }
        let any = Any::decode(&body[..]).map_err(|e| AckError::Undecodable(e.to_string()))?;
        if any.type_url != ACK_TYPE_URL {
            continue;
        }
        let ack = Ack::decode(&any.value[..]).map_err(|e| AckError::Undecodable(e.to_string()))?;
        if ack.epoch == epoch && ack.lane == lane {
            seqs.push(ack.seq);
        }
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(hooks: &[u8]) -> (Vec<(u8, u32)>, Bytes) {
        let frames: Vec<(u8, u32)> = hooks.iter().map(|h| (*h, 3)).collect();
        let bytes: Vec<u8> = hooks.iter().flat_map(|h| [*h; 3]).collect();
        (frames, Bytes::from(bytes))
    }

    #[test]
    fn acknowledgements_release_events_in_order_across_runs() {
        let mut u = Unacked::default();
        let (f1, b1) = frames(&[0, 1, 2]);
        let (f2, b2) = frames(&[3, 4]);
        assert_eq!(u.keep(&f1, b1), 1);
        assert_eq!(u.keep(&f2, b2), 4);
        assert_eq!(u.len(), 5);
        // Beyond what was written: refused, nothing released.
        assert_eq!(u.ack(6), None);
        assert_eq!(u.len(), 5);
        // Into the middle of the first run.
        let r = u.ack(2).unwrap();
        assert_eq!((r.events, r.per_hook[0], r.per_hook[1]), (2, 1, 1));
        // The resend starts after what is acknowledged, bytes included.
        let again: Vec<_> = u.resend().map(|(s, f, b)| (s, f.len(), b)).collect();
        assert_eq!(again[0], (3, 1, Bytes::from_static(&[2, 2, 2])));
        assert_eq!(again[1], (4, 2, Bytes::from_static(&[3, 3, 3, 4, 4, 4])));
        // An old acknowledgement again: nothing more.
        assert_eq!(u.ack(1).unwrap().events, 0);
        // Across the run boundary.
        let r = u.ack(4).unwrap();
        assert_eq!((r.events, r.per_hook[2], r.per_hook[3]), (2, 1, 1));
        assert_eq!(u.len(), 1);
        assert_eq!(u.resend().next().unwrap().0, 5);
        assert_eq!(u.clear(), vec![4]);
        assert_eq!(u.len(), 0);
        assert!(!u.stalled(Duration::ZERO));
    }

    fn ack_frame(epoch: u64, lane: u32, seq: u64) -> Vec<u8> {
        let any = Any {
            type_url: ACK_TYPE_URL.into(),
            value: Ack { epoch, lane, seq }.encode_to_vec(),
        };
        let mut v = (any.encoded_len() as u32).to_be_bytes().to_vec();
        v.extend(any.encode_to_vec());
        v
    }

    #[test]
    fn acks_are_read_whole_frames_at_a_time_and_filtered_by_epoch_and_lane() {
        let mut wire = Vec::new();
        wire.extend(ack_frame(7, 1, 10));
        wire.extend(ack_frame(8, 1, 99)); // another broker run
        wire.extend(ack_frame(7, 2, 99)); // another lane
        wire.extend(ack_frame(7, 1, 12));
        let mut inbox = BytesMut::new();
        let mut seen = Vec::new();
        // Byte by byte: nothing is read before its frame is complete.
        for b in wire {
            inbox.extend_from_slice(&[b]);
            seen.extend(read_acks(&mut inbox, 7, 1).unwrap());
        }
        assert_eq!(seen, vec![10, 12]);
        assert!(inbox.is_empty());
        let mut bad = BytesMut::from(&[0u8, 1, 0, 0][..]);
        assert_eq!(read_acks(&mut bad, 7, 1), Err(AckError::TooLong(65536)));
    }

    #[test]
    fn the_batch_frame_is_an_any_the_sdk_reads() {
        let frame = batch_frame(7, 3, 100, 5, true);
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let any = Any::decode(&frame[4..]).unwrap();
        assert_eq!(any.type_url, BATCH_TYPE_URL);
        let batch = Batch::decode(&any.value[..]).unwrap();
        assert_eq!(
            (
                batch.epoch,
                batch.lane,
                batch.first_seq,
                batch.count,
                batch.resent
            ),
            (7, 3, 100, 5, true)
        );
    }
}
