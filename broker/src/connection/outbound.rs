//! What goes to the client: deliveries from the session's mailbox within the inflight window,
//! redelivery of unacknowledged messages (DUP) when a session resumes, outbound topic aliases.

use tokio::time::Instant;

use super::Conn;
use crate::engine::{OutState, Outgoing};
use crate::hooks::{Hook, Notification};
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::{Packet, Properties, PubResp, Publish, PublishRef, QoS};

impl Conn {
    /// Sends queued deliveries while the inflight window has room.
    pub(crate) async fn pump(&mut self) -> Result<(), ()> {
        let mut batch = Vec::new();
        loop {
            let room = self.window.saturating_sub(self.state.outgoing.len());
            if room == 0 {
                return Ok(());
            }
            batch.clear();
            self.slot.mailbox.take(room.min(64), &mut batch);
            if batch.is_empty() {
                return Ok(());
            }
            Metrics::inc_by(&self.engine.metrics().queue_message_out, batch.len() as u64);
            for d in batch.drain(..) {
                self.send_delivery(d).await?;
            }
        }
    }

    /// Assigns a packet id not in use.
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.state.next_packet_id = self.state.next_packet_id.wrapping_add(1);
            let id = self.state.next_packet_id;
            if id != 0 && !self.state.outgoing.contains_key(&id) {
                return id;
            }
        }
    }

    /// The v5 properties of a delivery's PUBLISH (remaining expiry, subscription identifiers,
    /// an outbound topic alias), and whether the alias stands for the topic.
    /// `now`: the time, read only when the message expires.
    fn v5_properties(&mut self, d: &Delivery, now: Option<Instant>) -> (Properties, bool) {
        let m = &d.message;
        let mut properties = m.properties.clone();
        // Set only what there is: writing to an empty set allocates one.
        let now = now.or_else(|| m.expires_at.map(|_| Instant::now()));
        let expiry = now.and_then(|now| m.remaining_expiry(now));
        if expiry.is_some() || properties.message_expiry_interval.is_some() {
            properties.message_expiry_interval = expiry;
        }
        if !d.subscription_ids.is_empty() {
            properties.subscription_identifiers = d.subscription_ids.clone();
        }
        let mut elided = false;
        if self.client_alias_max > 0 {
            match self.out_aliases.get(&m.topic) {
                Some(&alias) => {
                    properties.topic_alias = Some(alias);
                    elided = true;
                }
                None if self.out_aliases.len() < usize::from(self.client_alias_max) => {
                    let alias = self.out_aliases.len() as u16 + 1;
                    self.out_aliases.insert(m.topic.clone(), alias);
                    properties.topic_alias = Some(alias);
                }
                None => {}
            }
        }
        (properties, elided)
    }

    /// Builds the PUBLISH for a delivery, owned (for resending after a reconnect).
    fn publish_for(&mut self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let (properties, elided) = if self.protocol.is_v5() {
            self.v5_properties(d, Some(now))
        } else {
            Default::default()
        };
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: if elided {
                String::new()
            } else {
                d.message.topic.to_string()
            },
            packet_id,
            payload: d.message.payload.clone(),
            properties,
        }
    }

    /// Sends one delivery (dropping it if expired or larger than the client accepts).
    async fn send_delivery(&mut self, mut d: Delivery) -> Result<(), ()> {
        // The clock only for a message that expires: reading it per delivery was 3 % of a
        // busy broker's time.
        let now = d.message.expires_at.map(|_| Instant::now());
        if now.is_some_and(|now| d.message.is_expired(now)) {
            Metrics::inc(&self.engine.metrics().queue_message_expired);
            self.unstore(&d);
            self.dropped(&d, "expired");
            return Ok(());
        }
        if self.engine.hooks().modifies(Hook::OnDeliver) {
            self.rewrite_for_delivery(&mut d).await;
        }
        let packet_id = if d.qos == QoS::AtMostOnce {
            0
        } else {
            self.next_packet_id()
        };
        // Written from the shared message (no copy of its topic); v3 has no properties to
        // write, so the message's own stand in.
        let message = d.message.clone();
        let v5 = self.protocol.is_v5().then(|| self.v5_properties(&d, now));
        let publish = PublishRef {
            dup: false,
            qos: d.qos,
            retain: d.retain,
            topic: match &v5 {
                Some((_, true)) => "",
                _ => &message.topic,
            },
            packet_id,
            payload: &message.payload,
            properties: v5.as_ref().map_or(&message.properties, |(p, _)| p),
        };
        if let Some(max) = self.client_max_packet
            && publish.encoded_len(self.protocol) > max
        {
            Metrics::inc(&self.engine.metrics().queue_message_drop);
            self.unstore(&d);
            self.dropped(&d, "too_large");
            return Ok(());
        }
        let hooks = self.engine.hooks();
        if hooks.wants(Hook::OnDeliver) {
            hooks.notify(&Notification::Deliver {
                client: &self.info,
                message: d.info(),
                persisted: d.persisted,
                acl: d.acl.as_deref(),
            });
        }
        if d.qos == QoS::ExactlyOnce {
            self.store_inflight(&d, packet_id, false);
        }
        if d.qos != QoS::AtMostOnce {
            let seq = self.state.next_seq;
            self.state.next_seq += 1;
            self.state.outgoing.insert(
                packet_id,
                Outgoing {
                    delivery: d,
                    state: OutState::Published,
                    seq,
                },
            );
        }
        Metrics::inc(&self.engine.metrics().mqtt_publish_sent);
        self.feed_publish(publish).await
    }

    /// Asks the `on_deliver` chain whether this subscriber gets the message changed (VerneMQ's
    /// on_deliver modifiers); the change is this delivery's own copy of the message.
    async fn rewrite_for_delivery(&mut self, d: &mut Delivery) {
        let engine = self.engine.clone();
        let Some(m) = engine.hooks().on_deliver(&self.info, &d.info()).await else {
            return;
        };
        if m.topic.is_none() && m.payload.is_none() && m.properties.is_none() {
            return;
        }
        let mut message = (*d.message).clone();
        if let Some(t) = m.topic.filter(|t| crate::topic::validate_name(t).is_ok()) {
            message.topic = t.into();
        }
        if let Some(p) = m.payload {
            message.payload = p;
        }
        if let Some(p) = m.properties {
            message.properties = p;
        }
        d.message = std::sync::Arc::new(message);
    }

    /// Fires `on_message_drop` for a delivery that will not be sent.
    fn dropped(&self, d: &Delivery, reason: &str) {
        let hooks = self.engine.hooks();
        if hooks.wants(Hook::OnMessageDrop) {
            hooks.notify(&Notification::MessageDrop {
                mountpoint: &self.mountpoint,
                client_id: &self.client_id,
                session_id: &self.info.session_id,
                message: d.info(),
                reason,
                acl: d.acl.as_deref(),
            });
        }
    }

    /// On a resumed session: resends every unacknowledged message in order, PUBLISH with DUP
    /// or PUBREL as the flow requires.
    pub(crate) async fn resend_inflight(&mut self) {
        let _ = self.resend_older_than(u64::MAX).await;
    }

    /// Sends again (DUP) the unacknowledged messages sent before send number `mark`, in order;
    /// an error when the socket failed. `retry_interval` and session resumption use it.
    pub(crate) async fn resend_older_than(&mut self, mark: u64) -> Result<(), ()> {
        let mut pending: Vec<(u64, u16)> = self
            .state
            .outgoing
            .iter()
            .filter(|(_, o)| o.seq < mark)
            .map(|(id, o)| (o.seq, *id))
            .collect();
        pending.sort_unstable();
        let now = Instant::now();
        for (_, id) in pending {
            let Some(o) = self.state.outgoing.get(&id).cloned() else {
                continue;
            };
            let packet = match o.state {
                OutState::Published => {
                    // Aliases do not survive the connection: send the full topic.
                    let saved = std::mem::take(&mut self.out_aliases);
                    let max = std::mem::replace(&mut self.client_alias_max, 0);
                    let p = self.publish_for(&o.delivery, id, true, now);
                    self.out_aliases = saved;
                    self.client_alias_max = max;
                    Metrics::inc(&self.engine.metrics().mqtt_publish_sent);
                    Packet::Publish(p)
                }
                OutState::Released => Packet::PubRel(PubResp::ok(id)),
            };
            self.feed(&packet).await?;
        }
        Ok(())
    }
}
