//! The at-least-once delivery mode (`vmq_events_sidecar.delivery = at_least_once` on the
//! broker): the broker numbers the events of each of its connections (a `Batch` frame before
//! each run of event frames), keeps them until the sidecar acknowledges them (`Ack` frames on
//! the same connection), and after a reconnect writes again, in order, what was not
//! acknowledged. The server does this side for you: each event reaches
//! [`crate::Handler::on_sequenced`] with its [`Sequence`], and is acknowledged when the handler
//! returns, or when the handler calls [`Sequence::ack`] if it
//! [acknowledges explicitly](crate::Handler::acks_explicitly). A re-sent event may have been
//! handled before the sidecar died: [`Dedup`] tells.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use vmq_sidecar_proto::v1::{Ack, Batch};

/// The type URL of the frame that numbers the event frames after it.
pub const BATCH_TYPE_URL: &str = "type.googleapis.com/eventssidecar.v1.Batch";
/// The type URL of an acknowledgement (sidecar to broker).
pub const ACK_TYPE_URL: &str = "type.googleapis.com/eventssidecar.v1.Ack";

/// Where an event stands in its broker connection's numbering.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// The broker run (random, chosen at its start).
    pub epoch: u64,
    /// The broker's connection (pool slot); all events of one client use one lane.
    pub lane: u32,
    /// The event's number on its lane: consecutive, from 1.
    pub seq: u64,
    /// Written before on an earlier connection and not acknowledged: this sidecar (or its
    /// previous run) may have handled it already.
    pub resent: bool,
    acks: Arc<AckState>,
}

impl Sequence {
    /// Acknowledges this event and every earlier one of its lane: the broker forgets them. Only
    /// needed by handlers that [acknowledge explicitly](crate::Handler::acks_explicitly),
    /// e.g. after a database commit; the server sends acknowledgements within 100 ms.
    pub fn ack(&self) {
        self.acks.handled.fetch_max(self.seq, Relaxed);
    }

    /// (epoch, lane, seq): unique per event across re-sends.
    pub fn key(&self) -> (u64, u32, u64) {
        (self.epoch, self.lane, self.seq)
    }
}

/// What a connection has handled, shared with its [`Sequence`]s.
#[derive(Debug, Default)]
struct AckState {
    handled: AtomicU64,
}

/// Tells a re-sent event handled before from a new one: remembers, per (epoch, lane), the
/// highest sequence number handled. Events of a lane come in order, re-sends included, so that
/// is all it takes; memory is one entry per broker connection.
///
/// Within one sidecar process this is exact. Across restarts, store [`Dedup::entries`] with
/// the data they protect (in the same transaction) and start from [`Dedup::from_entries`].
#[derive(Clone, Debug, Default)]
pub struct Dedup {
    highest: HashMap<(u64, u32), u64>,
}

impl Dedup {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from saved entries.
    pub fn from_entries(entries: impl IntoIterator<Item = ((u64, u32), u64)>) -> Self {
        Dedup {
            highest: entries.into_iter().collect(),
        }
    }

    /// True the first time an event is seen (and remembers it); false for a re-send of an event
    /// already seen.
    pub fn first_time(&mut self, seq: &Sequence) -> bool {
        let highest = self.highest.entry((seq.epoch, seq.lane)).or_insert(0);
        if seq.seq > *highest {
            *highest = seq.seq;
            true
        } else {
            false
        }
    }

    /// What it remembers: ((epoch, lane), highest sequence number seen).
    pub fn entries(&self) -> impl Iterator<Item = ((u64, u32), u64)> + '_ {
        self.highest.iter().map(|(k, v)| (*k, *v))
    }
}

/// One connection's numbering: the current `Batch`, and what was acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Sequencing {
    batch: Option<Batch>,
    /// Events of the current batch already given a number.
    taken: u32,
    acks: Arc<AckState>,
    /// The last acknowledgement sent.
    sent: u64,
    /// (epoch, lane) of the last batch: acknowledgements name them.
    lane: Option<(u64, u32)>,
    /// Events numbered since the last acknowledgement was sent.
    since_sent: u32,
}

impl Sequencing {
    /// Takes a `Batch` frame's value: the next `count` events are numbered from `first_seq`.
    /// False if it does not decode.
    pub(crate) fn start_batch(&mut self, value: &[u8]) -> bool {
        let Ok(batch) = Batch::decode(value) else {
            return false;
        };
        if self.lane != Some((batch.epoch, batch.lane)) {
            // A new broker run or lane: what was acknowledged belongs to the old one.
            self.acks = Arc::default();
            self.sent = 0;
        }
        self.lane = Some((batch.epoch, batch.lane));
        self.taken = 0;
        self.batch = (batch.count > 0).then_some(batch);
        true
    }

    /// The number of the next event frame, if a batch announced it.
    pub(crate) fn next(&mut self) -> Option<Sequence> {
        let batch = self.batch.as_ref()?;
        let seq = Sequence {
            epoch: batch.epoch,
            lane: batch.lane,
            seq: batch.first_seq + u64::from(self.taken),
            resent: batch.resent,
            acks: self.acks.clone(),
        };
        self.taken += 1;
        self.since_sent += 1;
        if self.taken >= batch.count {
            self.batch = None;
        }
        Some(seq)
    }

    /// Whether the broker numbers this connection's events (it is in at-least-once mode).
    pub(crate) fn active(&self) -> bool {
        self.lane.is_some()
    }

    /// Whether acknowledgements are due: something handled is not acknowledged, and either
    /// `eager` (the tick, or a blocking reader about to wait for input) or many events went by.
    pub(crate) fn ack_due(&self, eager: bool) -> bool {
        self.lane.is_some()
            && self.acks.handled.load(Relaxed) > self.sent
            && (eager || self.since_sent >= 256)
    }

    /// The acknowledgement frame to send now, if any, marking it sent.
    pub(crate) fn take_ack(&mut self) -> Option<Bytes> {
        let (epoch, lane) = self.lane?;
        let handled = self.acks.handled.load(Relaxed);
        if handled <= self.sent {
            return None;
        }
        self.sent = handled;
        self.since_sent = 0;
        Some(ack_frame(epoch, lane, handled))
    }
}

/// The frame acknowledging every event of (`epoch`, `lane`) up to `seq`.
pub fn ack_frame(epoch: u64, lane: u32, seq: u64) -> Bytes {
    let value = Ack { epoch, lane, seq }.encode_to_vec();
    let any = vmq_sidecar_proto::Any {
        type_url: ACK_TYPE_URL.to_owned(),
        value,
    };
    let mut frame = BytesMut::with_capacity(4 + any.encoded_len());
    frame.put_u32(any.encoded_len() as u32);
    any.encode_raw(&mut frame);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: u64, lane: u32, first_seq: u64, count: u32, resent: bool) -> Vec<u8> {
        Batch {
            epoch,
            lane,
            first_seq,
            count,
            resent,
        }
        .encode_to_vec()
    }

    #[test]
    fn events_are_numbered_by_their_batch_and_acknowledged_cumulatively() {
        let mut s = Sequencing::default();
        assert!(s.next().is_none(), "no batch: not numbered");
        assert!(s.start_batch(&batch(9, 2, 41, 2, false)));
        let a = s.next().unwrap();
        let b = s.next().unwrap();
        assert!(s.next().is_none(), "the batch announced two");
        assert_eq!((a.key(), b.key()), ((9, 2, 41), (9, 2, 42)));
        assert!(!s.ack_due(true), "nothing handled yet");
        b.ack();
        a.ack(); // an earlier one after a later one: the acknowledgement stays at 42
        assert!(s.ack_due(true));
        assert!(!s.ack_due(false), "not many events yet");
        let frame = s.take_ack().unwrap();
        assert_eq!(frame, ack_frame(9, 2, 42));
        assert!(s.take_ack().is_none(), "sent once");
        assert!(!s.start_batch(&[0xff]));
    }

    #[test]
    fn dedup_knows_resent_events() {
        let mut s = Sequencing::default();
        let mut d = Dedup::new();
        s.start_batch(&batch(1, 0, 1, 3, false));
        let first: Vec<_> = (0..3).map(|_| s.next().unwrap()).collect();
        assert!(first.iter().all(|q| d.first_time(q)));
        // The broker re-sends 2 and 3 (say an acknowledgement was lost), then 4.
        s.start_batch(&batch(1, 0, 2, 3, true));
        let again: Vec<_> = (0..3).map(|_| s.next().unwrap()).collect();
        assert!(again.iter().all(|q| q.resent));
        let fresh: Vec<bool> = again.iter().map(|q| d.first_time(q)).collect();
        assert_eq!(fresh, [false, false, true]);
        // Saved and restored, it still knows.
        let mut restored = Dedup::from_entries(d.entries().collect::<Vec<_>>());
        assert!(!restored.first_time(&again[2]));
    }
}
