//! Start-up recovery: what the store held comes back into the engine before the first client
//! is accepted.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Engine, OutState, Outgoing, SessionSlot, SessionState, Subscriber, Subscription};
use crate::hooks::{Hook, Notification};
use crate::metrics::Metrics;
use crate::store::{Op, Recovered};

/// Brings back what the store held: retained messages, then persistent sessions with their
/// subscriptions, queues and QoS 2 exchanges, each with the expiry it had left. Runs before
/// the listeners accept. What expired while the broker was down is removed (and reported as
/// `on_session_expired` / counted as expired messages).
pub(super) fn restore(engine: &Arc<Engine>, recovered: Recovered) {
    let Some(store) = engine.store.clone() else {
        return;
    };
    let now = Instant::now();
    let metrics = &engine.metrics;
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
        engine.retained.put(&mountpoint, Arc::new(message));
    }
    for s in recovered.sessions {
        let client_id: Arc<str> = s.client_id.as_str().into();
        let mailbox = engine.new_mailbox(&s.mountpoint, &client_id);
        mailbox.set_persistent(true);
        if s.expires_in == Some(Duration::ZERO) {
            store.submit(Op::DeleteSession(mailbox.store_key()));
            Metrics::inc(&metrics.sessions_expired);
            if engine.hooks.wants(Hook::OnSessionExpired) {
                engine.hooks.notify(&Notification::SessionExpired {
                    mountpoint: &s.mountpoint,
                    client_id: &client_id,
                    session_id: "",
                });
            }
            continue;
        }
        let mut state = SessionState::default();
        for (filter, record) in s.subscriptions {
            engine.router.subscribe(
                &s.mountpoint,
                &filter,
                Subscription {
                    client_id: client_id.clone(),
                    subscriber: Subscriber::Local(mailbox.clone()),
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
            released: tokio::sync::Notify::new(),
            attached_at: AtomicU64::new(0),
        });
        engine.registry.insert_restored(slot.clone());
        if let Some(left) = s.expires_in {
            engine.timers.expire_session(&slot, left);
        }
    }
}
