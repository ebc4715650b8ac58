//! Sessions: the state that outlives a connection (subscriptions, queue, unacknowledged
//! messages), the registry that maps client ids to sessions and handles takeover and expiry, and
//! the per-connection task in [`connection`].

mod accept;
pub mod connection;
mod inbound;
mod mailbox;
mod outbound;
pub mod persist;
mod will;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

pub use mailbox::{Mailbox, Pushed};

use crate::broker::Broker;
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::SubOptions;

/// A subscription as the session remembers it (to restore or remove it).
#[derive(Debug, Clone)]
pub struct SubRecord {
    /// Granted options.
    pub options: SubOptions,
    /// v5 subscription identifier.
    pub id: Option<u32>,
    /// The ACL that authorized it.
    pub acl: Option<Arc<crate::hooks::MatchedAcl>>,
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An outgoing QoS 1/2 message not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message.
    pub delivery: Delivery,
    /// Where it stands.
    pub state: OutState,
    /// Send order, for redelivery in order.
    pub seq: u64,
}

/// What a session keeps between connections.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Raw filter (with any `$share/` prefix) to options.
    pub subscriptions: HashMap<String, SubRecord>,
    /// Unacknowledged outgoing messages by packet id.
    pub outgoing: HashMap<u16, Outgoing>,
    /// Next packet id to try.
    pub next_packet_id: u16,
    /// Next send sequence number.
    pub next_seq: u64,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: HashSet<u16>,
}

/// The connection currently attached to a session.
#[derive(Debug)]
pub struct Attached {
    /// Tells the connection to go (with this v5 reason code).
    pub kick: oneshot::Sender<u8>,
    /// Completes when the connection has detached.
    pub done: oneshot::Receiver<()>,
}

/// A session, online or offline.
#[derive(Debug)]
pub struct SessionSlot {
    /// Mountpoint of the client's listener.
    pub mountpoint: String,
    /// Client id.
    pub client_id: Arc<str>,
    /// Where the router queues deliveries.
    pub mailbox: Arc<Mailbox>,
    /// Kept state while detached (`None` while a connection holds it): boxed, so an attached
    /// session pays a pointer here.
    pub state: Mutex<Option<Box<SessionState>>>,
    /// The attached connection, if any.
    pub attached: Mutex<Option<Attached>>,
    /// Incremented at each attach: a timer started for an older generation does nothing.
    pub generation: AtomicU64,
    /// Who the latest connection was (peer, user, protocol), for `session show`.
    pub info: Mutex<Option<Arc<crate::hooks::ClientInfo>>>,
}

type Key = (String, Arc<str>);

/// Client id (per mountpoint) to session.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<Key, Arc<SessionSlot>>>,
}

/// The outcome of attaching a connection to a session.
pub struct Attachment {
    /// The session.
    pub slot: Arc<SessionSlot>,
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// The session's state, now owned by the connection.
    pub state: Box<SessionState>,
    /// Fires when another connection takes the session over.
    pub kick: oneshot::Receiver<u8>,
    /// To be completed when the connection has detached.
    pub done: oneshot::Sender<()>,
}

impl Registry {
    /// Number of sessions, online and offline.
    pub fn len(&self) -> usize {
        self.sessions.lock().map_or(0, |s| s.len())
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sessions with a connection attached.
    pub fn online(&self) -> usize {
        self.sessions
            .lock()
            .map_or(0, |s| s.values().filter(|x| x.mailbox.is_online()).count())
    }

    /// Whether the session of `client_id` exists and has a connection attached.
    pub fn is_online(&self, mountpoint: &str, client_id: &str) -> bool {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        self.get(&key).is_some_and(|s| s.mailbox.is_online())
    }

    /// Every session, online and offline, sorted by mountpoint and client id.
    pub fn sessions(&self) -> Vec<Arc<SessionSlot>> {
        let mut v: Vec<Arc<SessionSlot>> = self
            .sessions
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (&a.mountpoint, &a.client_id).cmp(&(&b.mountpoint, &b.client_id)));
        v
    }

    /// Closes the connection of `client_id` (v5: DISCONNECT with `code`) and waits until it
    /// has detached; the session itself stays as its expiry says. Returns whether a
    /// connection was attached.
    pub async fn disconnect(&self, mountpoint: &str, client_id: &str, code: u8) -> bool {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        let Some(slot) = self.get(&key) else {
            return false;
        };
        let attached = slot.attached.lock().ok().and_then(|mut a| a.take());
        match attached {
            Some(a) => {
                let _ = a.kick.send(code);
                let _ = a.done.await;
                true
            }
            None => false,
        }
    }

    fn get(&self, key: &Key) -> Option<Arc<SessionSlot>> {
        self.sessions.lock().ok()?.get(key).cloned()
    }

    /// Attaches a new connection to the session of `client_id`: an existing connection is
    /// kicked out (and waited for), an existing session is resumed unless `clean_start`.
    pub async fn attach(
        &self,
        broker: &Broker,
        mountpoint: &str,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Attachment {
        let key: Key = (mountpoint.to_owned(), client_id.clone());
        loop {
            if let Some(slot) = self.get(&key) {
                let previous = slot.attached.lock().ok().and_then(|mut a| a.take());
                if let Some(previous) = previous {
                    let _ = previous.kick.send(crate::mqtt::reason::SESSION_TAKEN_OVER);
                    let _ = previous.done.await;
                }
            }
            let Ok(mut sessions) = self.sessions.lock() else {
                continue;
            };
            let existing = sessions.get(&key).cloned();
            if let Some(slot) = &existing
                && slot.attached.lock().is_ok_and(|a| a.is_some())
            {
                // Someone attached between our kick and now: go round again.
                continue;
            }
            let (kick_tx, kick_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let attached = Attached {
                kick: kick_tx,
                done: done_rx,
            };
            let (slot, session_present, state) = match existing {
                Some(slot) if !clean_start => {
                    let state = slot
                        .state
                        .lock()
                        .ok()
                        .and_then(|mut s| s.take())
                        .unwrap_or_default();
                    (slot, true, state)
                }
                other => {
                    if let Some(old) = other {
                        discard(broker, &old);
                    }
                    let slot = Arc::new(SessionSlot {
                        mountpoint: mountpoint.to_owned(),
                        client_id: client_id.clone(),
                        mailbox: Arc::new(Mailbox::new(
                            mountpoint.into(),
                            client_id.clone(),
                            broker.settings.queue_limits(),
                            broker.metrics.clone(),
                            broker.store.clone(),
                        )),
                        state: Mutex::default(),
                        attached: Mutex::new(None),
                        generation: AtomicU64::new(0),
                        info: Mutex::new(None),
                    });
                    sessions.insert(key.clone(), slot.clone());
                    (slot, false, Box::default())
                }
            };
            if let Ok(mut a) = slot.attached.lock() {
                *a = Some(attached);
            }
            slot.generation.fetch_add(1, Ordering::AcqRel);
            slot.mailbox.set_online(true);
            return Attachment {
                slot,
                session_present,
                state,
                kick: kick_rx,
                done: done_tx,
            };
        }
    }

    /// Detaches a connection: the state goes back into the slot; the session is kept for
    /// `expiry` (`None`: forever) or removed at once (`Some(0)`).
    pub fn detach(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        slot: &Arc<SessionSlot>,
        state: Box<SessionState>,
        expiry: Option<Duration>,
    ) {
        slot.mailbox.set_online(false);
        if let Ok(mut s) = slot.state.lock() {
            *s = Some(state);
        }
        if let Ok(mut a) = slot.attached.lock() {
            *a = None;
        }
        match expiry {
            Some(d) if d.is_zero() => {
                self.remove_if_current(broker, slot, None);
            }
            Some(d) => self.expire_after(broker, slot, d),
            None => {}
        }
    }

    /// Removes the (detached) session after `d` unless a connection attached in between.
    pub fn expire_after(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        slot: &Arc<SessionSlot>,
        d: Duration,
    ) {
        let generation = slot.generation.load(Ordering::Acquire);
        let (registry, broker, slot) = (self.clone(), broker.clone(), slot.clone());
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if registry.remove_if_current(&broker, &slot, Some(generation)) {
                Metrics::inc(&broker.metrics.sessions_expired);
                tracing::debug!(client_id = %slot.client_id, "session expired");
                if broker.hooks().wants(crate::hooks::Hook::OnSessionExpired) {
                    broker
                        .hooks()
                        .notify(&crate::hooks::Notification::SessionExpired {
                            mountpoint: &slot.mountpoint,
                            client_id: &slot.client_id,
                            session_id: &slot.mailbox.session_id(),
                        });
                }
            }
        });
    }

    /// Registers a session read back from the store (at start, before listeners accept).
    pub fn insert_restored(&self, slot: Arc<SessionSlot>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert((slot.mountpoint.clone(), slot.client_id.clone()), slot);
        }
    }

    /// Removes `slot` if it is still the registered, detached session (of `generation`, if
    /// given). Returns whether it did.
    pub fn remove_if_current(
        &self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        generation: Option<u64>,
    ) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else {
            return false;
        };
        let key: Key = (slot.mountpoint.clone(), slot.client_id.clone());
        let current = sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot));
        let detached = slot.attached.lock().is_ok_and(|a| a.is_none());
        let same_generation =
            generation.is_none_or(|g| g == slot.generation.load(Ordering::Acquire));
        if current && detached && same_generation {
            sessions.remove(&key);
            discard(broker, slot);
            true
        } else {
            false
        }
    }
}

/// Drops a session's subscriptions and queue, in memory and in the store.
fn discard(broker: &Broker, slot: &SessionSlot) {
    if slot.mailbox.in_store()
        && let Some(store) = &broker.store
    {
        store.submit(crate::store::Op::DeleteSession(slot.mailbox.store_key()));
    }
    let subs: Vec<String> = slot
        .state
        .lock()
        .ok()
        .and_then(|s| {
            s.as_ref()
                .map(|s| s.subscriptions.keys().cloned().collect())
        })
        .unwrap_or_default();
    for filter in subs {
        broker
            .router
            .unsubscribe(&slot.mountpoint, &filter, &slot.client_id);
    }
    slot.mailbox.clear();
}
