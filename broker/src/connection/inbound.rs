//! What a connected client sends: the acknowledgements of what we sent, SUBSCRIBE/UNSUBSCRIBE,
//! PINGREQ, DISCONNECT; a PUBLISH goes on to `publish.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use tracing::debug;

use super::{Conn, Exit};
use crate::engine::Subscription;
use crate::engine::{ClusterOp, OutState, Subscriber};
use crate::hooks::{Hook, Notification, SubscribeTopic, SubscribedTopic, TopicVerdict};
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::mqtt::{
    DisconnectReason, Packet, Properties, PubRelReason, PubResp, PublishRef, QoS, ReasonCode,
    SubAck, SubAckReason, Subscribe, UnsubAck, UnsubAckReason, Unsubscribe,
};
use crate::store::SubRecord;
use crate::topic;

/// `Ok(None)`: carry on; `Ok(Some(exit))`: end the connection; `Err(())`: the socket failed.
pub(crate) type Step = Result<Option<Exit>, ()>;

impl Conn {
    /// Writes a packet into the connection's buffer (flushed by the main loop).
    pub(crate) async fn feed(&mut self, packet: &Packet) -> Result<(), ()> {
        self.trace(|| {
            format!(
                "MQTT SEND: CID: {:?} {}",
                self.client_id,
                crate::trace::describe(packet)
            )
        });
        self.framed.feed(packet).await.map_err(|_| ())
    }

    /// Queues a PUBLISH borrowed from a shared message (see [`Conn::feed`]).
    pub(crate) async fn feed_publish(&mut self, publish: PublishRef<'_>) -> Result<(), ()> {
        self.trace(|| {
            format!(
                "MQTT SEND: CID: {:?} {}",
                self.client_id,
                crate::trace::describe(&Packet::Publish(publish.to_publish()))
            )
        });
        // As `feed` does: wait while the write buffer is over its limit, then encode into it.
        std::future::poll_fn(|cx| {
            futures::Sink::<&Packet>::poll_ready(std::pin::Pin::new(&mut self.framed), cx)
        })
        .await
        .map_err(|_| ())?;
        let buf = self.framed.write_buffer_mut();
        buf.reserve(publish.encoded_len(self.protocol));
        publish.encode(self.protocol, buf);
        Ok(())
    }

    /// Whether a topic or filter has more levels than `topic_max_depth` allows.
    pub(super) fn too_deep(&self, topic: &str) -> bool {
        self.engine
            .config()
            .topic_max_depth
            .is_some_and(|max| topic.split('/').count() > max)
    }

    /// Sends a line to the traces of this client, if any (`vmq-admin trace client`).
    pub(crate) fn trace(&self, make: impl FnOnce() -> String) {
        self.tracer.emit(&self.mountpoint, &self.client_id, make);
    }

    /// Handles one packet from the client.
    pub(crate) async fn handle(&mut self, packet: Packet) -> Step {
        match packet {
            Packet::Publish(p) => self.on_publish(p).await,
            Packet::PubAck(r) => {
                if self
                    .state
                    .outgoing
                    .get(&r.packet_id)
                    .is_some_and(|o| o.delivery.qos == QoS::AtLeastOnce)
                    && let Some(o) = self.state.outgoing.remove(&r.packet_id)
                {
                    self.unstore(&o.delivery);
                    self.delivery_complete(&o.delivery);
                }
                Ok(None)
            }
            Packet::PubRec(r) => {
                let known = match self.state.outgoing.get_mut(&r.packet_id) {
                    Some(o) if o.delivery.qos == QoS::ExactlyOnce => {
                        if r.reason.code() >= 0x80 {
                            // The client refused the message: the flow ends here.
                            if let Some(o) = self.state.outgoing.remove(&r.packet_id) {
                                self.unstore(&o.delivery);
                            }
                            return Ok(None);
                        }
                        o.state = OutState::Released;
                        let delivery = o.delivery.clone();
                        self.store_inflight(&delivery, r.packet_id, true);
                        self.delivery_complete(&delivery);
                        true
                    }
                    _ => false,
                };
                let mut rel = PubResp::ok(r.packet_id);
                if !known && self.protocol.is_v5() {
                    rel.reason = PubRelReason::PacketIdentifierNotFound;
                }
                self.feed(&Packet::PubRel(rel)).await.map(|()| None)
            }
            Packet::PubComp(r) => {
                if self
                    .state
                    .outgoing
                    .get(&r.packet_id)
                    .is_some_and(|o| o.state == OutState::Released)
                    && let Some(o) = self.state.outgoing.remove(&r.packet_id)
                {
                    self.unstore(&o.delivery);
                }
                Ok(None)
            }
            Packet::PubRel(r) => {
                let known = self.state.incoming_qos2.remove(&r.packet_id);
                let mut comp = PubResp::ok(r.packet_id);
                if !known && self.protocol.is_v5() {
                    comp.reason = PubRelReason::PacketIdentifierNotFound;
                }
                self.feed(&Packet::PubComp(comp)).await.map(|()| None)
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => self.feed(&Packet::PingResp).await.map(|()| None),
            Packet::Disconnect(d) => {
                if let Some(secs) = d.properties.session_expiry_interval {
                    if self.connect_expiry_zero && secs != 0 {
                        return Ok(Some(Exit::Closed(DisconnectReason::ProtocolError)));
                    }
                    self.session_expiry = match secs {
                        u32::MAX => None,
                        s => Some(Duration::from_secs(u64::from(s))),
                    };
                }
                Ok(Some(if d.reason == DisconnectReason::DisconnectWithWill {
                    Exit::DisconnectedWithWill
                } else {
                    Exit::Disconnected
                }))
            }
            Packet::Connect(_) => {
                debug!(client_id = %self.client_id, "second CONNECT");
                Metrics::inc(&self.engine.metrics().mqtt_protocol_error);
                Ok(Some(Exit::Closed(DisconnectReason::ProtocolError)))
            }
            // Extended authentication is not offered, and server-to-client packets are not
            // for a client to send.
            Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                Metrics::inc(&self.engine.metrics().mqtt_protocol_error);
                Ok(Some(Exit::Closed(DisconnectReason::ProtocolError)))
            }
        }
    }

    /// Fires `on_delivery_complete` for an acknowledged delivery.
    fn delivery_complete(&self, d: &Delivery) {
        if self.engine.hooks().wants(Hook::OnDeliveryComplete) {
            self.engine.hooks().notify(&Notification::DeliveryComplete {
                client: &self.info,
                message: d.info(),
                persisted: d.persisted,
                acl: d.acl.as_deref(),
            });
        }
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Step {
        Metrics::inc(&self.engine.metrics().mqtt_subscribe_received);
        let id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let want_auth = self.engine.hooks().wants(Hook::AuthOnSubscribe);
        let want_notify = self.engine.hooks().wants(Hook::OnSubscribe);
        let mut report: Vec<SubscribedTopic> = Vec::new();
        // The valid topics are asked about in one call of the chain, as VerneMQ does.
        let valid: Vec<bool> = s
            .filters
            .iter()
            .map(|(f, _)| topic::parse_filter(f).is_ok_and(|f| !self.too_deep(f.filter)))
            .collect();
        let mut verdicts = if want_auth {
            let asked: Vec<SubscribeTopic> = s
                .filters
                .iter()
                .zip(&valid)
                .filter(|(_, ok)| **ok)
                .map(|((filter, options), _)| SubscribeTopic {
                    filter: filter.clone(),
                    options: *options,
                })
                .collect();
            let verdicts = self
                .engine
                .hooks()
                .auth_on_subscribe(&self.info, &asked, &s.properties)
                .await;
            self.trace(|| {
                let topics: Vec<String> = asked
                    .iter()
                    .map(|t| format!("{{{:?}, {}}}", t.filter, t.options.qos as u8))
                    .collect();
                format!(
                    "Calling auth_on_subscribe({:?}, {:?}, [{}])\nHook returned {:?}",
                    self.info.username,
                    self.client_id,
                    topics.join(", "),
                    verdicts
                )
            });
            verdicts.into_iter()
        } else {
            Vec::new().into_iter()
        };
        for ((filter, options), valid) in s.filters.iter().zip(valid) {
            let refused = |reason, report: &mut Vec<SubscribedTopic>| {
                if want_notify {
                    report.push(SubscribedTopic {
                        filter: filter.clone(),
                        qos: 0x80,
                        options: *options,
                        acl: None,
                    });
                }
                reason
            };
            if !valid {
                reasons.push(refused(SubAckReason::TopicFilterInvalid, &mut report));
                continue;
            }
            let (filter, options, acl) = match verdicts.next() {
                None => (filter.clone(), *options, None),
                Some(TopicVerdict::Allow {
                    filter: new,
                    options,
                    acl,
                }) if topic::parse_filter(&new).is_ok() => (new, options, acl),
                Some(verdict) => {
                    // Refused, unparseable after a rewrite, or nobody decided (asked and no
                    // plugin allowed it: refused, as VerneMQ does).
                    let reason = match verdict {
                        TopicVerdict::Refuse(r) => r,
                        _ => SubAckReason::NotAuthorized,
                    };
                    Metrics::inc(&self.engine.metrics().mqtt_subscribe_auth_error);
                    reasons.push(refused(reason, &mut report));
                    continue;
                }
            };
            let Ok(parsed) = topic::parse_filter(&filter) else {
                continue;
            };
            if !self.engine.cluster_allows(ClusterOp::Subscribe) {
                Metrics::inc(&self.engine.metrics().netsplit_refused);
                reasons.push(refused(
                    SubAckReason::ImplementationSpecificError,
                    &mut report,
                ));
                continue;
            }
            let (filter, options) = (&filter, &options);
            if let Some(max) = self.engine.config().max_subscriptions_per_client
                && self.state.subscriptions.len() >= max
                && !self.state.subscriptions.contains_key(filter)
            {
                Metrics::inc(&self.engine.metrics().subscriptions_refused_limit);
                reasons.push(SubAckReason::QuotaExceeded);
                if want_notify {
                    report.push(SubscribedTopic {
                        filter: filter.clone(),
                        qos: 0x80,
                        options: *options,
                        acl: None,
                    });
                }
                continue;
            }
            let acl = acl.map(Arc::new);
            if parsed.group.is_some() && options.no_local && self.protocol.is_v5() {
                // [MQTT-3.8.3-4]: no local on a shared subscription is a protocol error.
                return Ok(Some(Exit::Closed(DisconnectReason::ProtocolError)));
            }
            let existed = self.engine.subscribe(
                &self.mountpoint,
                filter,
                Subscription {
                    client_id: self.client_id.clone(),
                    subscriber: Subscriber::Local(self.slot.mailbox.clone()),
                    options: *options,
                    id,
                    acl: acl.clone(),
                },
            );
            if want_notify {
                report.push(SubscribedTopic {
                    filter: filter.clone(),
                    qos: options.qos as u8,
                    options: *options,
                    acl: acl.as_deref().cloned(),
                });
            }
            self.state.subscriptions.insert(
                filter.clone(),
                SubRecord {
                    options: *options,
                    id,
                    acl: acl.clone(),
                },
            );
            reasons.push(SubAckReason::granted(options.qos));
            let send_retained = parsed.group.is_none()
                && match options.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
            if send_retained {
                for m in self
                    .engine
                    .retained_matching(&self.mountpoint, parsed.filter)
                {
                    retained.push(Delivery {
                        qos: m.qos.min(options.qos),
                        message: m,
                        retain: true,
                        subscription_ids: id.into_iter().collect(),
                        persisted: false,
                        acl: acl.clone(),
                        stored: None,
                    });
                }
            }
        }
        self.persist_session(false);
        let ack = Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: Properties::default(),
        });
        self.feed(&ack).await?;
        if want_notify {
            self.engine.hooks().notify(&Notification::Subscribe {
                client: &self.info,
                topics: &report,
                properties: &s.properties,
            });
        }
        for d in retained {
            self.slot.mailbox.push(d);
        }
        Ok(None)
    }

    /// Runs `auth_on_subscribe` again for the session's subscriptions, as the user name a
    /// plugin asked for (VerneMQ's `vmq_api.reauthorize_subscriptions`), and removes those no
    /// plugin allows now. The client is not told: MQTT has no packet for it (VerneMQ neither).
    pub(super) async fn reauthorize(&mut self) {
        let Some(username) = self
            .engine
            .take_reauthorize(&self.mountpoint, &self.client_id)
        else {
            return;
        };
        if self.state.subscriptions.is_empty() || !self.engine.hooks().wants(Hook::AuthOnSubscribe)
        {
            return;
        }
        let mut info = (*self.info).clone();
        info.username = username;
        let asked: Vec<SubscribeTopic> = self
            .state
            .subscriptions
            .iter()
            .map(|(filter, record)| SubscribeTopic {
                filter: filter.clone(),
                options: record.options,
            })
            .collect();
        let verdicts = self
            .engine
            .hooks()
            .auth_on_subscribe(&info, &asked, &Properties::default())
            .await;
        let mut removed = Vec::new();
        for (topic, verdict) in asked.into_iter().zip(verdicts) {
            if !matches!(verdict, TopicVerdict::Allow { .. }) {
                self.state.subscriptions.remove(&topic.filter);
                self.engine
                    .unsubscribe(&self.mountpoint, &topic.filter, &self.client_id);
                removed.push(topic.filter);
            }
        }
        if !removed.is_empty() {
            tracing::info!(client_id = %self.client_id, ?removed, "subscriptions no longer authorized removed");
            Metrics::inc_by(
                &self.engine.metrics().subscriptions_reauthorize_removed,
                removed.len() as u64,
            );
            self.persist_session(false);
        }
    }

    async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Step {
        Metrics::inc(&self.engine.metrics().mqtt_unsubscribe_received);
        let u_count = u.filters.len();
        let mut reasons = Vec::with_capacity(u_count);
        // A plugin may replace the filters (VerneMQ's on_unsubscribe modifiers); UNSUBACK
        // still answers each filter the client sent.
        let filters = if self.engine.hooks().modifies(Hook::OnUnsubscribe) {
            self.engine
                .hooks()
                .on_unsubscribe(&self.info, &u.filters, &u.properties)
                .await
        } else {
            None
        };
        let rewritten = filters.is_some();
        let filters = filters.unwrap_or(u.filters);
        if !self.engine.cluster_allows(ClusterOp::Unsubscribe) {
            // Cut off from most of the cluster: the subscriptions stay (v5 says why; a v3
            // UNSUBACK cannot).
            Metrics::inc(&self.engine.metrics().netsplit_refused);
            let ack = Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons: vec![UnsubAckReason::ImplementationSpecificError; u_count],
                properties: Properties::default(),
            });
            return self.feed(&ack).await.map(|()| None);
        }
        for filter in &filters {
            let existed = self.state.subscriptions.remove(filter).is_some();
            self.engine
                .unsubscribe(&self.mountpoint, filter, &self.client_id);
            reasons.push(if existed || rewritten {
                UnsubAckReason::Success
            } else {
                UnsubAckReason::NoSubscriptionExisted
            });
        }
        reasons.resize(u_count, UnsubAckReason::Success);
        if self.engine.hooks().wants(Hook::OnUnsubscribe) {
            self.engine.hooks().notify(&Notification::Unsubscribe {
                client: &self.info,
                topics: &filters,
            });
        }
        self.persist_session(false);
        let ack = Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: Properties::default(),
        });
        self.feed(&ack).await.map(|()| None)
    }
}
