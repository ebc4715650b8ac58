//! The sessions' side of the message store: what a connection writes (its session record, the
//! in-flight state of stored QoS 2 messages, their removal once acknowledged), when it may
//! acknowledge a publish that had to be stored, and how sessions come back at start.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use super::connection::{Conn, Exit};
use super::{Mailbox, OutState, Outgoing, SessionSlot, SessionState};
use crate::broker::Broker;
use crate::hooks::{Hook, Notification};
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::{Packet, reason};
use crate::router::Subscription;
use crate::store::{Op, Recovered, Ticket};

impl Conn {
    /// Writes the session record (subscriptions, expiry, online or not) when the session is
    /// persistent and there is a store.
    pub(crate) fn persist_session(&self, offline: bool) {
        if let Some(store) = self.slot.mailbox.store() {
            store.submit(Op::PutSession {
                key: self.slot.mailbox.store_key(),
                subscriptions: self
                    .state
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.clone()))
                    .collect(),
                expiry: self.session_expiry,
                offline_since: offline.then(SystemTime::now),
            });
        }
    }

    /// Removes a stored delivery (acknowledged, refused, expired or dropped).
    pub(crate) fn unstore(&self, d: &Delivery) {
        if let (Some(seq), Some(store)) = (d.stored, &self.broker.store) {
            store.submit(Op::DeleteQueued {
                key: self.slot.mailbox.store_key(),
                seq,
            });
        }
    }

    /// Records the packet id (and whether PUBREL was sent) of a stored QoS 2 delivery, so the
    /// exchange resumes with the same id after a restart.
    pub(crate) fn store_inflight(&self, d: &Delivery, packet_id: u16, released: bool) {
        if let (Some(seq), Some(store)) = (d.stored, &self.broker.store) {
            store.submit(Op::PutQueued {
                key: self.slot.mailbox.store_key(),
                seq,
                delivery: d.clone(),
                packet_id: Some(packet_id),
                released,
            });
        }
    }

    /// Sends an acknowledgement of an inbound publish, or holds it until the store has made
    /// durable what the publish wrote (`ticket`). Once one is held, later ones queue behind
    /// it, so acknowledgements keep the order of the publishes.
    pub(crate) async fn acknowledge(
        &mut self,
        packet: Packet,
        ticket: Option<Ticket>,
    ) -> super::inbound::Step {
        let wait = match (ticket, &self.broker.store) {
            (Some(t), Some(store)) => store.must_wait(t),
            _ => false,
        };
        if wait || !self.held.is_empty() {
            self.hold_for = self.hold_for.max(ticket.unwrap_or(0));
            self.held.push(packet);
            Ok(None)
        } else {
            self.feed(&packet).await.map(|()| None)
        }
    }

    /// Waits for the store to commit what held acknowledgements depend on, then writes them.
    /// If the store failed, the client is disconnected without them: it will publish again.
    pub(crate) async fn release_held(&mut self) -> Result<(), Exit> {
        if self.held.is_empty() {
            return Ok(());
        }
        let broker = self.broker.clone();
        if let Some(store) = &broker.store
            && store.durable(self.hold_for).await.is_err()
        {
            self.held.clear();
            return Err(Exit::Closed(reason::UNSPECIFIED_ERROR));
        }
        for p in std::mem::take(&mut self.held) {
            self.feed(&p).await.map_err(|()| Exit::Lost)?;
        }
        Ok(())
    }
}

/// Brings back what the store held: retained messages, then persistent sessions with their
/// subscriptions, queues and QoS 2 exchanges, each with the expiry it had left. Runs before
/// the listeners accept. What expired while the broker was down is removed (and reported as
/// `on_session_expired` / counted as expired messages).
pub fn restore(broker: &Arc<Broker>, recovered: Recovered) {
    let Some(store) = broker.store.clone() else {
        return;
    };
    let now = Instant::now();
    let metrics = &broker.metrics;
    for (mountpoint, message) in recovered.retained {
        if message.is_expired(now) {
            store.submit(Op::PutRetained {
                mountpoint: mountpoint.as_str().into(),
                topic: message.topic.clone(),
                message: None,
            });
            continue;
        }
        Metrics::inc(&metrics.store_retained_recovered);
        broker.router.retain(&mountpoint, Arc::new(message));
    }
    for s in recovered.sessions {
        let client_id: Arc<str> = s.client_id.as_str().into();
        let mailbox = Arc::new(Mailbox::new(
            s.mountpoint.as_str().into(),
            client_id.clone(),
            broker.settings.queue_limits(),
            metrics.clone(),
            Some(store.clone()),
        ));
        mailbox.set_persistent(true);
        if s.expires_in == Some(Duration::ZERO) {
            store.submit(Op::DeleteSession(mailbox.store_key()));
            Metrics::inc(&metrics.sessions_expired);
            if broker.hooks().wants(Hook::OnSessionExpired) {
                broker.hooks().notify(&Notification::SessionExpired {
                    mountpoint: &s.mountpoint,
                    client_id: &client_id,
                    session_id: "",
                });
            }
            continue;
        }
        let mut state = SessionState::default();
        for (filter, record) in s.subscriptions {
            broker.router.subscribe(
                &s.mountpoint,
                &filter,
                Subscription {
                    client_id: client_id.clone(),
                    mailbox: mailbox.clone(),
                    options: record.options,
                    id: record.id,
                    acl: record.acl.clone(),
                },
            );
            state.subscriptions.insert(filter, record);
        }
        let mut next_seq = 1;
        let mut queued = Vec::new();
        for q in s.queue {
            next_seq = next_seq.max(q.seq + 1);
            if !q.released && q.delivery.message.is_expired(now) {
                Metrics::inc(&metrics.queue_message_expired);
                store.submit(Op::DeleteQueued {
                    key: mailbox.store_key(),
                    seq: q.seq,
                });
                continue;
            }
            Metrics::inc(&metrics.store_messages_recovered);
            match q.packet_id {
                Some(id) => {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    let out = if q.released {
                        OutState::Released
                    } else {
                        OutState::Published
                    };
                    state.outgoing.insert(
                        id,
                        Outgoing {
                            delivery: q.delivery,
                            state: out,
                            seq,
                        },
                    );
                }
                None => queued.push(q.delivery),
            }
        }
        mailbox.set_next_seq(next_seq);
        mailbox.restore(queued);
        Metrics::inc(&metrics.store_sessions_recovered);
        let slot = Arc::new(SessionSlot {
            mountpoint: s.mountpoint,
            client_id,
            mailbox,
            state: Mutex::new(Some(Box::new(state))),
            attached: Mutex::new(None),
            generation: AtomicU64::new(0),
            info: Mutex::new(None),
        });
        broker.registry.insert_restored(slot.clone());
        if let Some(left) = s.expires_in {
            broker.registry.expire_after(broker, &slot, left);
        }
    }
}
