//! The sessions' side of the message store: what a connection writes (its session record, the
//! in-flight state of stored QoS 2 messages, their removal once acknowledged), when it may
//! acknowledge a publish that had to be stored. (How sessions come back at start is the
//! engine's `restore`.)

use std::time::SystemTime;

use super::{Conn, Exit};
use crate::message::Delivery;
use crate::mqtt::{DisconnectReason, Packet};
use crate::store::{Op, Ticket};

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
        if let (Some(seq), Some(store)) = (d.stored, &self.engine.store()) {
            store.submit(Op::DeleteQueued {
                key: self.slot.mailbox.store_key(),
                seq,
            });
        }
    }

    /// Records the packet id (and whether PUBREL was sent) of a stored QoS 2 delivery, so the
    /// exchange resumes with the same id after a restart.
    pub(crate) fn store_inflight(&self, d: &Delivery, packet_id: u16, released: bool) {
        if let (Some(seq), Some(store)) = (d.stored, &self.engine.store()) {
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
        let wait = match (ticket, &self.engine.store()) {
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
        let engine = self.engine.clone();
        if let Some(store) = &engine.store()
            && store.durable(self.hold_for).await.is_err()
        {
            self.held.clear();
            return Err(Exit::Closed(DisconnectReason::UnspecifiedError));
        }
        for p in std::mem::take(&mut self.held) {
            self.feed(&p).await.map_err(|()| Exit::Lost)?;
        }
        Ok(())
    }
}
