//! Sessions: the state that outlives a connection (subscriptions, queue, unacknowledged
//! messages), and the registry that maps client ids to sessions and handles takeover and
//! expiry. A connection attaches to a session and detaches from it; the registry never knows
//! what a connection is beyond the two channels it is handed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{Engine, Mailbox};
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::DisconnectReason;
use crate::store::SubRecord;

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
    /// Unacknowledged outgoing messages by packet id (looked up a few times per delivery:
    /// a fast hash, the ids are ours).
    pub outgoing: HashMap<u16, Outgoing, foldhash::fast::RandomState>,
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
    pub kick: oneshot::Sender<DisconnectReason>,
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
    /// Woken when a connection detaches (its state is back): a takeover waits for it.
    pub released: tokio::sync::Notify,
    /// When the latest connection attached (Unix ms): after a netsplit heals, of two
    /// connections with one client id on two nodes the older one goes.
    pub attached_at: AtomicU64,
}

type Key = (String, Arc<str>);

/// How long a takeover waits for the kicked connection to hand its session state back.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// Whether this node may hold a client's session. The registry asks before it creates or
/// resumes one; the answer is the seam where a cluster decides which node owns a client id
/// (and makes another node's session let go first, handing it over). Without one (a single
/// node) every claim succeeds with nothing handed over.
pub trait Ownership: Send + Sync + std::fmt::Debug {
    /// Claims the session of `client_id` on `mountpoint` for this node: the session another
    /// node held, when it held one and `clean_start` is off; an error refuses the connection
    /// (CONNACK "server unavailable") with this text logged.
    fn claim<'a>(
        &'a self,
        mountpoint: &'a str,
        client_id: &'a str,
        clean_start: bool,
    ) -> BoxFuture<'a, Result<Option<Handover>, String>>;
}

/// A session another node let go of, for this node to carry on.
#[derive(Debug, Default)]
pub struct Handover {
    /// Its subscriptions.
    pub subscriptions: Vec<(String, SubRecord)>,
    /// Its messages, in order: those that were in flight first, then its queue.
    pub queue: Vec<Delivery>,
    /// Its session id (kept across the move).
    pub session_id: Option<Arc<str>>,
}

/// Client id (per mountpoint) to session.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<Key, Arc<SessionSlot>>>,
    /// Reauthorizations asked for and not yet run: the user name to ask as, per session (one
    /// entry per existing session at most).
    reauthorize: Mutex<HashMap<Key, Option<String>>>,
    /// Who decides which node holds a session (a cluster); none on a single node.
    ownership: OnceLock<Arc<dyn Ownership>>,
}

/// The outcome of attaching a connection to a session.
#[derive(Debug)]
pub struct Attachment {
    /// The session.
    pub slot: Arc<SessionSlot>,
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// The session's state, now owned by the connection.
    pub state: Box<SessionState>,
    /// Fires when another connection takes the session over.
    pub kick: oneshot::Receiver<DisconnectReason>,
    /// To be completed when the connection has detached.
    pub done: oneshot::Sender<()>,
}

impl Registry {
    /// Number of sessions, online and offline.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Number of sessions with a connection attached.
    pub fn online(&self) -> usize {
        self.sessions
            .lock()
            .values()
            .filter(|x| x.mailbox.is_online())
            .count()
    }

    /// Whether the session of `client_id` exists and has a connection attached.
    pub fn is_online(&self, mountpoint: &str, client_id: &str) -> bool {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        self.get(&key).is_some_and(|s| s.mailbox.is_online())
    }

    /// Every session, online and offline, sorted by mountpoint and client id.
    pub fn sessions(&self) -> Vec<Arc<SessionSlot>> {
        let mut v: Vec<Arc<SessionSlot>> = self.sessions.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.mountpoint, &a.client_id).cmp(&(&b.mountpoint, &b.client_id)));
        v
    }

    /// Closes the connection of `client_id` (v5: DISCONNECT with `code`) and waits until it
    /// has detached; the session itself stays as its expiry says. Returns whether a
    /// connection was attached.
    pub async fn disconnect(
        &self,
        mountpoint: &str,
        client_id: &str,
        code: DisconnectReason,
    ) -> bool {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        let Some(slot) = self.get(&key) else {
            return false;
        };
        let attached = slot.attached.lock().take();
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
        self.sessions.lock().get(key).cloned()
    }

    /// Asks the session of `client_id` to run `auth_on_subscribe` again for its
    /// subscriptions, as `username`: at once when a connection is attached, else when its
    /// client next connects. Returns whether the session exists.
    pub fn request_reauthorize(
        &self,
        mountpoint: &str,
        client_id: &str,
        username: Option<String>,
    ) -> bool {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        let Some(slot) = self.get(&key) else {
            return false;
        };
        self.reauthorize.lock().insert(key, username);
        slot.mailbox.request_reauthorize();
        true
    }

    /// The user name a reauthorization of `client_id`'s session was asked with, once.
    pub fn take_reauthorize(&self, mountpoint: &str, client_id: &str) -> Option<Option<String>> {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        self.reauthorize.lock().remove(&key)
    }

    /// Attaches a new connection to the session of `client_id`: an existing connection is
    /// kicked out (and waited for), an existing session is resumed unless `clean_start`.
    /// Refused when this node may not own the session.
    pub async fn attach(
        &self,
        engine: &Engine,
        mountpoint: &str,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Result<Attachment, String> {
        let mut handover = match self.ownership.get() {
            Some(o) => o.claim(mountpoint, client_id, clean_start).await?,
            None => None,
        };
        let key: Key = (mountpoint.to_owned(), client_id.clone());
        loop {
            if let Some(slot) = self.get(&key) {
                let previous = slot.attached.lock().take();
                if let Some(previous) = previous {
                    let _ = previous.kick.send(DisconnectReason::SessionTakenOver);
                    let _ = previous.done.await;
                }
            }
            // A session whose state is out (its connection was kicked and has not detached
            // yet) is waited for: its state must be back before anyone resumes or discards it.
            let current = self.get(&key);
            let released = current.as_ref().map(|slot| slot.released.notified());
            tokio::pin!(released);
            if let Some(r) = released.as_mut().as_pin_mut() {
                r.enable();
            }
            // Decided under the registry's lock, which is never held across an await.
            let decided = {
                let mut sessions = self.sessions.lock();
                let existing = sessions.get(&key).cloned();
                if existing.as_ref().is_some_and(|slot| {
                    slot.attached.lock().is_some() || slot.state.lock().is_none()
                }) {
                    // Someone attached between our kick and now, or the kicked connection has
                    // not detached yet: go round again.
                    None
                } else {
                    let (slot, session_present, mut state) = match existing {
                        Some(slot) if !clean_start => {
                            let state = slot.state.lock().take().unwrap_or_default();
                            (slot, true, state)
                        }
                        other => {
                            if let Some(old) = other {
                                discard(engine, &old);
                            }
                            let slot = Arc::new(SessionSlot {
                                mountpoint: mountpoint.to_owned(),
                                client_id: client_id.clone(),
                                mailbox: engine.new_mailbox(mountpoint, client_id),
                                state: Mutex::default(),
                                attached: Mutex::new(None),
                                generation: AtomicU64::new(0),
                                info: Mutex::new(None),
                                released: tokio::sync::Notify::new(),
                                attached_at: AtomicU64::new(0),
                            });
                            sessions.insert(key.clone(), slot.clone());
                            (slot, false, Box::default())
                        }
                    };
                    let session_present = match handover.take() {
                        Some(h) if !clean_start => {
                            adopt(engine, &slot, &mut state, h);
                            true
                        }
                        _ => session_present,
                    };
                    // Attached before the lock goes: a racing attach sees it and kicks it.
                    let (kick_tx, kick_rx) = oneshot::channel();
                    let (done_tx, done_rx) = oneshot::channel();
                    *slot.attached.lock() = Some(Attached {
                        kick: kick_tx,
                        done: done_rx,
                    });
                    slot.generation.fetch_add(1, Ordering::AcqRel);
                    slot.attached_at.store(
                        crate::store::unix_ms(std::time::SystemTime::now()),
                        Ordering::Relaxed,
                    );
                    slot.mailbox.set_online(true);
                    Some(Attachment {
                        slot,
                        session_present,
                        state,
                        kick: kick_rx,
                        done: done_tx,
                    })
                }
            };
            match (decided, released.as_pin_mut()) {
                (Some(attachment), _) => return Ok(attachment),
                (None, Some(released)) => {
                    if tokio::time::timeout(HANDOVER_WAIT, released).await.is_err() {
                        // The connection holding the state never gave it back (its task
                        // died): the session goes on without it.
                        if let Some(slot) = &current
                            && slot.attached.lock().is_none()
                        {
                            let mut state = slot.state.lock();
                            if state.is_none() {
                                tracing::warn!(client_id = %client_id, "session state not handed back in time; resuming without it");
                                *state = Some(Box::default());
                            }
                        }
                    }
                }
                (None, None) => tokio::task::yield_now().await,
            }
        }
    }

    /// Detaches a connection: the state goes back into the slot; the session is kept for
    /// `expiry` (`None`: forever) or removed at once (`Some(0)`).
    pub fn detach(
        &self,
        engine: &Arc<Engine>,
        slot: &Arc<SessionSlot>,
        state: Box<SessionState>,
        expiry: Option<Duration>,
    ) {
        slot.mailbox.set_online(false);
        *slot.state.lock() = Some(state);
        *slot.attached.lock() = None;
        slot.released.notify_waiters();
        match expiry {
            Some(d) if d.is_zero() => {
                self.remove_if_current(engine, slot, None);
            }
            Some(d) => engine.timers().expire_session(slot, d),
            None => {}
        }
    }

    /// Removes the session of `slot` if it is still of `generation` and detached: its
    /// expiry timer has run out. Reports the expiry.
    pub(super) fn expire(&self, engine: &Engine, slot: &Arc<SessionSlot>, generation: u64) {
        if self.remove_if_current(engine, slot, Some(generation)) {
            Metrics::inc(&engine.metrics.sessions_expired);
            tracing::debug!(client_id = %slot.client_id, "session expired");
            if engine.hooks.wants(crate::hooks::Hook::OnSessionExpired) {
                engine
                    .hooks
                    .notify(&crate::hooks::Notification::SessionExpired {
                        mountpoint: &slot.mountpoint,
                        client_id: &slot.client_id,
                        session_id: &slot.mailbox.session_id(),
                    });
            }
        }
    }

    /// Makes `ownership` decide which node holds a session (once; a cluster sets it).
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        let _ = self.ownership.set(ownership);
    }

    /// Lets go of the session of `client_id` because another node claimed it: its connection
    /// (if any) is told the session was taken over and waited for, then the session leaves
    /// this node. Returns it (empty unless `keep`: the claimer resumes it) when it existed.
    pub async fn hand_over(
        &self,
        engine: &Engine,
        mountpoint: &str,
        client_id: &str,
        keep: bool,
    ) -> Option<Handover> {
        let key: Key = (mountpoint.to_owned(), client_id.into());
        let slot = self.get(&key)?;
        let previous = slot.attached.lock().take();
        if let Some(previous) = previous {
            let _ = previous.kick.send(DisconnectReason::SessionTakenOver);
            let _ = tokio::time::timeout(HANDOVER_WAIT, previous.done).await;
        }
        let mut sessions = self.sessions.lock();
        if !sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            return None;
        }
        sessions.remove(&key);
        let mut h = Handover::default();
        if keep {
            let state = slot.state.lock();
            if let Some(state) = state.as_ref() {
                h.subscriptions = state
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.clone()))
                    .collect();
                let mut inflight: Vec<&Outgoing> = state.outgoing.values().collect();
                inflight.sort_by_key(|o| o.seq);
                h.queue = inflight.into_iter().map(|o| o.delivery.clone()).collect();
            }
            drop(state);
            slot.mailbox.take(usize::MAX, &mut h.queue);
            h.session_id = Some(slot.mailbox.session_id()).filter(|id| !id.is_empty());
        }
        discard(engine, &slot);
        Some(h)
    }

    /// Registers a session read back from the store (at start, before listeners accept).
    pub fn insert_restored(&self, slot: Arc<SessionSlot>) {
        self.sessions
            .lock()
            .insert((slot.mountpoint.clone(), slot.client_id.clone()), slot);
    }

    /// Removes `slot` if it is still the registered, detached session (of `generation`, if
    /// given). Returns whether it did.
    pub fn remove_if_current(
        &self,
        engine: &Engine,
        slot: &Arc<SessionSlot>,
        generation: Option<u64>,
    ) -> bool {
        let mut sessions = self.sessions.lock();
        let key: Key = (slot.mountpoint.clone(), slot.client_id.clone());
        let current = sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot));
        let detached = slot.attached.lock().is_none();
        let same_generation =
            generation.is_none_or(|g| g == slot.generation.load(Ordering::Acquire));
        if current && detached && same_generation {
            sessions.remove(&key);
            self.reauthorize.lock().remove(&key);
            // Under the registry's lock: a client attaching again gets a fresh session only
            // after the old one's subscriptions are gone.
            discard(engine, slot);
            true
        } else {
            false
        }
    }
}

/// Takes on a session another node handed over: its subscriptions go into the router (and
/// the state) and its messages into the mailbox, after any already there.
fn adopt(engine: &Engine, slot: &Arc<SessionSlot>, state: &mut SessionState, h: Handover) {
    for (filter, record) in h.subscriptions {
        if state.subscriptions.contains_key(&filter) {
            continue;
        }
        engine.router.subscribe(
            &slot.mountpoint,
            &filter,
            super::Subscription {
                client_id: slot.client_id.clone(),
                subscriber: super::Subscriber::Local(slot.mailbox.clone()),
                options: record.options,
                id: record.id,
                acl: record.acl.clone(),
            },
        );
        state.subscriptions.insert(filter, record);
    }
    slot.mailbox.restore(h.queue);
    if let Some(id) = h.session_id {
        *slot.mailbox.session_id.lock() = id;
    }
}

/// Drops a session's subscriptions and queue, in memory and in the store.
fn discard(engine: &Engine, slot: &SessionSlot) {
    if slot.mailbox.in_store()
        && let Some(store) = &engine.store
    {
        store.submit(crate::store::Op::DeleteSession(slot.mailbox.store_key()));
    }
    let subs: Vec<String> = slot
        .state
        .lock()
        .as_ref()
        .map(|s| s.subscriptions.keys().cloned().collect())
        .unwrap_or_default();
    for filter in subs {
        engine
            .router
            .unsubscribe(&slot.mountpoint, &filter, &slot.client_id);
    }
    slot.mailbox.clear();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn engine() -> Arc<Engine> {
        Engine::for_tests(Config::default())
    }

    /// A connection as the registry sees it: attached, and detaching when kicked (after the
    /// session's state has gone back), like the connection task does.
    fn serve(
        engine: &Arc<Engine>,
        a: Attachment,
        expiry: Option<Duration>,
    ) -> tokio::task::JoinHandle<DisconnectReason> {
        let engine = engine.clone();
        tokio::spawn(async move {
            let code = a
                .kick
                .await
                .unwrap_or(DisconnectReason::NormalDisconnection);
            engine.detach(&a.slot, a.state, expiry);
            let _ = a.done.send(());
            code
        })
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_races_end_with_one_connection_and_everyone_else_kicked() {
        let engine = engine();
        let id: Arc<str> = "c".into();
        let (attached_tx, mut attached_rx) = tokio::sync::mpsc::unbounded_channel();
        // Eleven connections of one client attach at once; each serves until kicked.
        let tasks: Vec<_> = (0..11)
            .map(|_| {
                let (engine, id, attached_tx) = (engine.clone(), id.clone(), attached_tx.clone());
                tokio::spawn(async move {
                    let a = engine.attach("", &id, false).await.unwrap();
                    let _ = attached_tx.send(a.session_present);
                    serve(&engine, a, None).await.unwrap()
                })
            })
            .collect();
        let mut present = Vec::new();
        for _ in 0..11 {
            present.push(attached_rx.recv().await.unwrap());
        }
        // One created the session, the ten others resumed it.
        assert_eq!(present.iter().filter(|p| !**p).count(), 1, "{present:?}");
        let mut codes = Vec::new();
        let mut still_attached = 0;
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(5), t).await {
                Ok(code) => codes.push(code.unwrap()),
                Err(_) => still_attached += 1,
            }
        }
        assert_eq!(still_attached, 1);
        assert_eq!(codes.len(), 10);
        assert!(
            codes
                .iter()
                .all(|c| *c == DisconnectReason::SessionTakenOver)
        );
        assert_eq!(engine.session_count(), 1);
        assert_eq!(engine.online_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_before_expiry_keeps_the_session_and_a_later_expiry_removes_it() {
        let engine = engine();
        let id: Arc<str> = "p".into();
        let a = engine.attach("", &id, false).await.unwrap();
        engine.detach(&a.slot, a.state, Some(Duration::from_secs(10)));
        let _ = a.done.send(());
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Reconnects half way: the first timer must not remove the resumed session.
        let b = engine.attach("", &id, false).await.unwrap();
        assert!(b.session_present);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(engine.session_count(), 1);
        assert_eq!(Metrics::get(&engine.metrics().sessions_expired), 0);
        // Goes away again: this time the session expires.
        engine.detach(&b.slot, b.state, Some(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(engine.session_count(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(engine.session_count(), 0);
        assert_eq!(Metrics::get(&engine.metrics().sessions_expired), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn clean_start_discards_the_old_session_and_zero_expiry_removes_at_once() {
        let engine = engine();
        let id: Arc<str> = "z".into();
        let a = engine.attach("", &id, false).await.unwrap();
        engine.detach(&a.slot, a.state, None);
        let b = engine.attach("", &id, true).await.unwrap();
        assert!(!b.session_present);
        assert!(!Arc::ptr_eq(&a.slot, &b.slot));
        engine.detach(&b.slot, b.state, Some(Duration::ZERO));
        assert_eq!(engine.session_count(), 0);
    }
}
