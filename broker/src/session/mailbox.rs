//! A session's queue: the router pushes deliveries in, the session's connection (when there is
//! one) takes them out. It outlives connections, so a persistent session keeps receiving while
//! its client is offline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl Mailbox {
    /// An empty, offline mailbox.
    pub fn new(
        client_id: Arc<str>,
        max_online: usize,
        max_offline: usize,
        metrics: Arc<Metrics>,
    ) -> Mailbox {
        Mailbox {
            client_id,
            session_id: Mutex::new("".into()),
            queue: Mutex::default(),
            online: AtomicBool::new(false),
            notify: Notify::new(),
            max_online,
            max_offline,
            metrics,
        }
    }

    /// Queues a delivery (dropped, and counted, if the queue is full).
    pub fn push(&self, mut delivery: Delivery) -> Pushed {
        let online = self.is_online();
        let limit = if online {
            self.max_online
        } else {
            self.max_offline
        };
        delivery.persisted = !online;
        {
            let Ok(mut q) = self.queue.lock() else {
                return Pushed::Dropped;
            };
            if q.len() >= limit {
                Metrics::inc(&self.metrics.queue_message_drop);
                return Pushed::Dropped;
            }
            q.push_back(delivery);
        }
        Metrics::inc(&self.metrics.queue_message_in);
        self.notify.notify_one();
        if online {
            Pushed::Online
        } else {
            Pushed::Offline
        }
    }

    /// The session id of the latest connection.
    pub fn session_id(&self) -> Arc<str> {
        self.session_id
            .lock()
            .map_or_else(|_| "".into(), |s| s.clone())
    }

    /// Puts deliveries back at the front (in order), e.g. the unsent part of a batch.
    pub fn push_front(&self, deliveries: impl DoubleEndedIterator<Item = Delivery>) {
        if let Ok(mut q) = self.queue.lock() {
            for d in deliveries.rev() {
                q.push_front(d);
            }
        }
    }

    /// Takes up to `n` deliveries.
    pub fn take(&self, n: usize, out: &mut Vec<Delivery>) {
        if let Ok(mut q) = self.queue.lock() {
            let k = n.min(q.len());
            out.extend(q.drain(..k));
        }
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
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

    /// Completes when something was pushed since the last call.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Drops everything queued (session discarded).
    pub fn clear(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
    }
}
