//! A session's queue: the router pushes deliveries in, the session's connection (when there is
//! one) takes them out. It outlives connections, so a persistent session keeps receiving while
//! its client is offline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use tokio::sync::Notify;

/// What became of a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connected client.
    Online,
    /// Queued for the offline session.
    Offline,
    /// Dropped: the queue was full.
    Dropped,
}

use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::QoS;
use crate::store::{Op, SessionKey, Store, Ticket};

/// Bounded queue of deliveries for one session.
#[derive(Debug)]
pub struct Mailbox {
    /// The session's client id.
    pub client_id: Arc<str>,
    /// The session id of the session's latest connection.
    pub session_id: Mutex<Arc<str>>,
    queue: Mutex<VecDeque<Delivery>>,
    online: AtomicBool,
    notify: Notify,
    max_online: usize,
    max_offline: usize,
    metrics: Arc<Metrics>,
    /// The session's mountpoint.
    pub mountpoint: Arc<str>,
    /// Where QoS 1/2 deliveries of a persistent session are written.
    store: Option<Arc<Store>>,
    /// Whether the session outlives its connection (then its QoS 1/2 deliveries are stored).
    persistent: AtomicBool,
    /// Whether the session was ever written to the store (then discarding it deletes it there).
    in_store: AtomicBool,
    /// Next stored-queue position.
    next_seq: AtomicU64,
    /// Woken when a congested queue has drained to a quarter (publishers pacing on it).
    drained: Notify,
    /// Set when the queue reaches half of its online limit, cleared at a quarter.
    half_full: AtomicBool,
    /// Set when a plugin asks the session to run auth_on_subscribe again for its
    /// subscriptions (`Registry::request_reauthorize`); the connection clears it.
    reauthorize: AtomicBool,
    /// `override_max_online_messages`: a full online queue drops its oldest delivery.
    drop_oldest: bool,
    /// When the connection last took deliveries (ms on [`clock_ms`]): a subscriber that has
    /// not read for a while is stuck, and publishers must not wait for it.
    last_take: AtomicU64,
}

/// How long a subscriber may go without taking anything and still be waited for.
const STUCK_AFTER_MS: u64 = 1_000;

/// Milliseconds on tokio's clock since the first call in this process (tests pause and
/// advance it).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now()
        .saturating_duration_since(start)
        .as_millis() as u64
}

impl Mailbox {
    /// An empty, offline mailbox.
    pub fn new(
        mountpoint: Arc<str>,
        client_id: Arc<str>,
        limits: (usize, usize),
        metrics: Arc<Metrics>,
        store: Option<Arc<Store>>,
    ) -> Mailbox {
        let (max_online, max_offline) = limits;
        Mailbox {
            mountpoint,
            store,
            persistent: AtomicBool::new(false),
            in_store: AtomicBool::new(false),
            next_seq: AtomicU64::new(1),
            drained: Notify::new(),
            half_full: AtomicBool::new(false),
            reauthorize: AtomicBool::new(false),
            last_take: AtomicU64::new(clock_ms()),
            client_id,
            session_id: Mutex::new("".into()),
            queue: Mutex::default(),
            online: AtomicBool::new(false),
            notify: Notify::new(),
            max_online,
            max_offline,
            metrics,
            drop_oldest: false,
        }
    }

    /// A full online queue drops its oldest delivery for a new one instead of the new one
    /// (`override_max_online_messages`).
    pub fn dropping_oldest(mut self, drop_oldest: bool) -> Mailbox {
        self.drop_oldest = drop_oldest;
        self
    }

    /// The session's identity in the store.
    pub fn store_key(&self) -> SessionKey {
        SessionKey {
            mountpoint: self.mountpoint.clone(),
            client_id: self.client_id.clone(),
        }
    }

    /// The store, if this session's deliveries are written to it.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store
            .as_ref()
            .filter(|_| self.persistent.load(Ordering::Acquire))
    }

    /// Marks whether the session outlives its connection.
    pub fn set_persistent(&self, persistent: bool) {
        self.persistent.store(persistent, Ordering::Release);
        if persistent && self.store.is_some() {
            self.in_store.store(true, Ordering::Release);
        }
    }

    /// Whether the session may have records in the store.
    pub fn in_store(&self) -> bool {
        self.in_store.load(Ordering::Acquire)
    }

    /// Continues the stored queue's numbering after a restart.
    pub fn set_next_seq(&self, seq: u64) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    /// Puts deliveries read back from the store at the end of the queue (no limit: they were
    /// accepted once, they are not dropped now).
    pub fn restore(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        self.queue.lock().extend(deliveries);
    }

    /// Whether this queue is filling faster than its connected subscriber drains it: half
    /// full, and the subscriber is reading (a stuck one is not waited for: its queue drops).
    pub fn congested(&self) -> bool {
        self.is_online()
            && self.half_full.load(Ordering::Relaxed)
            && clock_ms().saturating_sub(self.last_take.load(Ordering::Relaxed)) < STUCK_AFTER_MS
    }

    /// Completes when the queue has drained to a quarter, or at once if it is not congested.
    /// Publishers feeding it wait here (bounded by a timeout) before reading more.
    pub async fn drained(&self) {
        let wake = self.drained.notified();
        if !self.congested() {
            return;
        }
        wake.await
    }

    /// Queues a delivery (dropped, and counted, if the queue is full). A QoS 1/2 delivery to a
    /// persistent session is also written to the store; the ticket says when it is durable.
    pub fn push(&self, mut delivery: Delivery) -> (Pushed, Option<Ticket>) {
        let online = self.is_online();
        let limit = if online {
            self.max_online
        } else {
            self.max_offline
        };
        delivery.persisted = !online;
        let mut ticket = None;
        {
            let mut q = self.queue.lock();
            if q.len() >= limit {
                Metrics::inc(&self.metrics.queue_message_drop);
                if !(online && self.drop_oldest && limit > 0) {
                    return (Pushed::Dropped, None);
                }
                // The oldest goes, the new one is queued.
                if let Some(oldest) = q.pop_front()
                    && let (Some(seq), Some(store)) = (oldest.stored, self.store())
                {
                    store.submit(Op::DeleteQueued {
                        key: self.store_key(),
                        seq,
                    });
                }
            }
            if delivery.qos != QoS::AtMostOnce
                && let Some(store) = self.store()
            {
                // Under the queue lock: store order is queue order.
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                delivery.stored = Some(seq);
                ticket = Some(store.submit(Op::PutQueued {
                    key: self.store_key(),
                    seq,
                    delivery: delivery.clone(),
                    packet_id: None,
                    released: false,
                }));
            }
            q.push_back(delivery);
            if online && q.len() >= self.max_online / 2 {
                self.half_full.store(true, Ordering::Relaxed);
            }
        }
        Metrics::inc(&self.metrics.queue_message_in);
        self.notify.notify_one();
        let pushed = if online {
            Pushed::Online
        } else {
            Pushed::Offline
        };
        (pushed, ticket)
    }

    /// The session id of the latest connection.
    pub fn session_id(&self) -> Arc<str> {
        self.session_id.lock().clone()
    }

    /// Puts deliveries back at the front (in order), e.g. the unsent part of a batch.
    pub fn push_front(&self, deliveries: impl DoubleEndedIterator<Item = Delivery>) {
        let mut q = self.queue.lock();
        for d in deliveries.rev() {
            q.push_front(d);
        }
    }

    /// Takes up to `n` deliveries.
    pub fn take(&self, n: usize, out: &mut Vec<Delivery>) {
        self.last_take.store(clock_ms(), Ordering::Relaxed);
        let left = {
            let mut q = self.queue.lock();
            let k = n.min(q.len());
            out.extend(q.drain(..k));
            q.len()
        };
        if left <= self.max_online / 4 && self.half_full.swap(false, Ordering::Relaxed) {
            self.drained.notify_waiters();
        }
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks whether a connection is attached.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
        if online {
            self.notify.notify_one();
        }
    }

    /// Whether a connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Flags a reauthorization for the connection and wakes it as a delivery would.
    pub fn request_reauthorize(&self) {
        self.reauthorize.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether a reauthorization was asked since the last call.
    pub fn take_reauthorize(&self) -> bool {
        self.reauthorize.load(Ordering::Relaxed) && self.reauthorize.swap(false, Ordering::Acquire)
    }

    /// Completes when something was pushed since the last call.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Drops everything queued (session discarded).
    pub fn clear(&self) {
        self.queue.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::Message;
    use crate::mqtt::{Properties, Publish};

    fn delivery() -> Delivery {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: 0,
            payload: bytes::Bytes::from_static(b"x"),
            properties: Properties::default(),
        };
        Delivery {
            message: Arc::new(Message::from_publish(&p, "t".into(), None)),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            persisted: false,
            acl: None,
            stored: None,
        }
    }

    fn mailbox(online: usize, offline: usize) -> Mailbox {
        Mailbox::new(
            "".into(),
            "c".into(),
            (online, offline),
            Arc::new(Metrics::default()),
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn congestion_starts_at_half_and_ends_at_a_quarter() {
        let m = mailbox(8, 8);
        m.set_online(true);
        let mut out = Vec::new();
        m.take(0, &mut out);
        for _ in 0..3 {
            m.push(delivery());
        }
        assert!(!m.congested(), "below half");
        m.push(delivery());
        assert!(m.congested(), "half full and read");
        // A waiting publisher is released only once the queue is down to a quarter.
        let waiter = {
            let drained = m.drained();
            tokio::pin!(drained);
            assert!(futures::poll!(drained.as_mut()).is_pending());
            m.take(1, &mut out);
            assert!(m.congested(), "3 left: still above a quarter");
            assert!(futures::poll!(drained.as_mut()).is_pending());
            m.take(1, &mut out);
            futures::poll!(drained.as_mut())
        };
        assert!(waiter.is_ready(), "2 left: drained");
        assert!(!m.congested());
        // Refilling to 3 is not congested again (hysteresis), 4 is.
        m.push(delivery());
        assert!(!m.congested());
        m.push(delivery());
        assert!(m.congested());
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_stopped_reading_is_not_waited_for_and_full_queues_drop() {
        let m = mailbox(4, 2);
        m.set_online(true);
        let mut out = Vec::new();
        m.take(0, &mut out);
        for _ in 0..2 {
            m.push(delivery());
        }
        assert!(m.congested());
        tokio::time::advance(Duration::from_millis(STUCK_AFTER_MS + 1)).await;
        assert!(!m.congested(), "stuck: publishers go on");
        for _ in 0..2 {
            assert_eq!(m.push(delivery()).0, Pushed::Online);
        }
        assert_eq!(m.push(delivery()).0, Pushed::Dropped);
        assert_eq!(Metrics::get(&m.metrics.queue_message_drop), 1);
        // Offline, the offline limit applies.
        m.set_online(false);
        m.clear();
        assert_eq!(m.push(delivery()).0, Pushed::Offline);
        assert_eq!(m.push(delivery()).0, Pushed::Offline);
        assert_eq!(m.push(delivery()).0, Pushed::Dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn override_max_online_messages_drops_the_oldest() {
        let m = mailbox(2, 2).dropping_oldest(true);
        m.set_online(true);
        let mut out = Vec::new();
        for payload in ["1", "2", "3"] {
            let mut d = delivery();
            let mut msg = (*d.message).clone();
            msg.payload = bytes::Bytes::from(payload);
            d.message = Arc::new(msg);
            assert_eq!(m.push(d).0, Pushed::Online);
        }
        m.take(10, &mut out);
        let kept: Vec<&[u8]> = out.iter().map(|d| d.message.payload.as_ref()).collect();
        assert_eq!(kept, [b"2".as_slice(), b"3"]);
        assert_eq!(Metrics::get(&m.metrics.queue_message_drop), 1);
        // Offline, the new message is the one dropped, as before.
        m.set_online(false);
        m.push(delivery());
        m.push(delivery());
        assert_eq!(m.push(delivery()).0, Pushed::Dropped);
    }
}
