//! An inbound PUBLISH: its topic and aliases checked, the plugins asked (one at a time, or
//! several read together when their answers are waited for), routed, stored if retained, and
//! acknowledged at the QoS the client sent.

use std::sync::Arc;

use tracing::debug;

use super::inbound::Step;
use super::{Conn, Exit};
use crate::engine::{ClusterOp, Congested};
use crate::hooks::{AuthResult, Hook, MessageInfo, Notification};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::mqtt::{DisconnectReason, Packet, PubAckReason, PubResp, Publish, QoS};
use crate::store::Ticket;
use crate::topic;

impl Conn {
    /// Resolves the topic of an inbound PUBLISH, applying v5 topic aliases.
    fn resolve_topic(&mut self, p: &mut Publish) -> Result<(), DisconnectReason> {
        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > self.engine.config().topic_alias_max {
                return Err(DisconnectReason::TopicAliasInvalid);
            }
            if p.topic.is_empty() {
                match self.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(DisconnectReason::ProtocolError),
                }
            } else {
                self.in_aliases.insert(alias, p.topic.clone());
            }
        }
        topic::validate_name(&p.topic).map_err(|_| DisconnectReason::TopicNameInvalid)?;
        if self.too_deep(&p.topic) {
            return Err(DisconnectReason::TopicNameInvalid);
        }
        Ok(())
    }

    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Step {
        if let Some(step) = self.check_publish(&mut p) {
            return step;
        }
        let asked = self.engine.hooks().wants(Hook::AuthOnPublish);
        let mut waited = false;
        let decision = if asked {
            let info = publish_info(&p);
            let mut answer = std::pin::pin!(self.engine.hooks().auth_on_publish(&self.info, &info));
            match futures::FutureExt::now_or_never(answer.as_mut()) {
                Some(d) => d,
                None => {
                    waited = true;
                    answer.await
                }
            }
        } else {
            None
        };
        if asked {
            self.publish_auth_waits = waited;
        }
        self.decided_publish(p, asked, decision).await
    }

    /// Handles publishes read together (a batch from the socket) when plugins authorize
    /// publishes: the plugins are asked about all of them at once, then each is routed and
    /// acknowledged in order, as if one after the other. A plugin that answers from elsewhere
    /// (a Lua state, an HTTP endpoint) then serves a busy publisher in batches instead of one
    /// round trip per message. A publish that ends the connection ends the run there.
    pub(crate) async fn on_publishes(&mut self, mut run: Vec<Publish>) -> Step {
        let mut stop = None;
        for (i, p) in run.iter_mut().enumerate() {
            if let Some(step) = self.check_publish(p) {
                stop = Some((i, step));
                break;
            }
        }
        if let Some((i, _)) = stop {
            run.truncate(i);
        }
        let (decisions, waited) = {
            let infos: Vec<MessageInfo<'_>> = run.iter().map(publish_info).collect();
            let mut all = std::pin::pin!(
                self.engine
                    .hooks()
                    .auth_on_publish_batch(&self.info, &infos)
            );
            match futures::FutureExt::now_or_never(all.as_mut()) {
                Some(d) => (d, false),
                None => (all.await, true),
            }
        };
        // Answered at once: the next publishes go their own way again.
        self.publish_auth_waits = waited;
        for (p, decision) in run.into_iter().zip(decisions) {
            match self.decided_publish(p, true, decision).await {
                Ok(None) => {}
                other => return other,
            }
        }
        stop.map_or(Ok(None), |(_, step)| step)
    }

    /// Counts an inbound PUBLISH and checks it before any plugin sees it (topic, aliases,
    /// retain); `Some` ends the connection.
    fn check_publish(&mut self, p: &mut Publish) -> Option<Step> {
        Metrics::inc(&self.engine.metrics().mqtt_publish_received);
        if let Err(code) = self.resolve_topic(p) {
            debug!(client_id = %self.client_id, topic = %p.topic, ?code, "bad PUBLISH topic");
            Metrics::inc(&self.engine.metrics().mqtt_protocol_error);
            return Some(Ok(Some(Exit::Closed(code))));
        }
        if p.retain && !self.engine.config().retain_available {
            return Some(Ok(Some(Exit::Closed(DisconnectReason::RetainNotSupported))));
        }
        None
    }

    /// Routes and acknowledges a publish the plugins decided on (`asked`: whether they were
    /// asked; `decision`: `None` when nobody decided).
    async fn decided_publish(
        &mut self,
        mut p: Publish,
        asked: bool,
        decision: Option<AuthResult<crate::hooks::PublishModifiers>>,
    ) -> Step {
        let mut acl = None;
        let mut into = None;
        // The acknowledgement follows the QoS the client sent, whatever QoS a plugin routes
        // the message with.
        let received = p.qos;
        self.trace(|| {
            format!(
                "Calling auth_on_publish({:?}, {:?}, {}, {:?}, {}) with payload:\n    {}\n{}",
                self.info.username,
                self.client_id,
                p.qos as u8,
                p.topic,
                p.retain,
                String::from_utf8_lossy(&p.payload[..p.payload.len().min(512)]),
                crate::trace::outcome(asked, decision.as_ref())
            )
        });
        match decision {
            Some(AuthResult::Ok(a)) => acl = a,
            Some(AuthResult::OkWith(m, a)) => {
                acl = a;
                if let Some(t) = m.topic {
                    p.topic = t;
                }
                if let Some(b) = m.payload {
                    p.payload = b;
                }
                if let Some(q) = m.qos {
                    p.qos = q;
                }
                if let Some(r) = m.retain {
                    p.retain = r;
                }
                if let Some(props) = m.properties {
                    p.properties = *props;
                }
                into = m.mountpoint;
                if m.throttle.is_some() {
                    self.throttle = m.throttle;
                }
            }
            // Plugins were asked and none allowed it: refused, as VerneMQ does.
            Some(AuthResult::Error(_) | AuthResult::Next) => {
                return self.refuse_publish(&p).await;
            }
            None if asked => return self.refuse_publish(&p).await,
            None => {}
        }
        if received == QoS::ExactlyOnce {
            if self.state.incoming_qos2.contains(&p.packet_id) {
                // A retransmission of a message already routed: acknowledge only.
                return self
                    .feed(&Packet::PubRec(PubResp::ok(p.packet_id)))
                    .await
                    .map(|()| None);
            }
            if self.state.incoming_qos2.len()
                >= usize::from(self.engine.config().receive_max_broker)
            {
                return Ok(Some(Exit::Closed(DisconnectReason::ReceiveMaximumExceeded)));
            }
        }
        if !self.engine.cluster_allows(ClusterOp::Publish) {
            debug!(client_id = %self.client_id, topic = %p.topic, "publish refused: netsplit");
            Metrics::inc(&self.engine.metrics().netsplit_refused);
            return self
                .decline_publish(&p, PubAckReason::ImplementationSpecificError)
                .await;
        }
        let (routed, ticket, congested) = self.route(&p, acl.as_ref(), into.as_deref());
        if congested.is_some() {
            self.pace = congested;
        }
        let mut ack = PubResp::ok(p.packet_id);
        if routed == 0 && self.protocol.is_v5() {
            ack.reason = PubAckReason::NoMatchingSubscribers;
        }
        match received {
            QoS::AtMostOnce => Ok(None),
            QoS::AtLeastOnce => self.acknowledge(Packet::PubAck(ack), ticket).await,
            QoS::ExactlyOnce => {
                self.state.incoming_qos2.insert(p.packet_id);
                self.acknowledge(Packet::PubRec(ack), ticket).await
            }
        }
    }

    /// Answers a publish no plugin allowed, without routing it: v5 acknowledges with 0x87; v3
    /// has no way to say no, so it gets the normal acknowledgement and the message is dropped
    /// ([MQTT-3.3.5-2] allows that or closing; dropping keeps a client with one wrong topic
    /// connected).
    async fn refuse_publish(&mut self, p: &Publish) -> Step {
        debug!(client_id = %self.client_id, topic = %p.topic, "publish not authorized");
        Metrics::inc(&self.engine.metrics().mqtt_publish_auth_error);
        self.decline_publish(p, PubAckReason::NotAuthorized).await
    }

    /// Acknowledges a publish that is not routed: v5 with `reason`, v3 without (the message
    /// is dropped, as VerneMQ drops an unauthorized one).
    async fn decline_publish(&mut self, p: &Publish, reason: PubAckReason) -> Step {
        if p.qos == QoS::ExactlyOnce {
            self.state.incoming_qos2.insert(p.packet_id);
        }
        let mut ack = PubResp::ok(p.packet_id);
        if !self.protocol.is_v5() {
            return match p.qos {
                QoS::AtMostOnce => Ok(None),
                QoS::AtLeastOnce => self.feed(&Packet::PubAck(ack)).await.map(|()| None),
                QoS::ExactlyOnce => self.feed(&Packet::PubRec(ack)).await.map(|()| None),
            };
        }
        ack.reason = reason;
        match p.qos {
            QoS::AtMostOnce => Ok(None),
            QoS::AtLeastOnce => self.feed(&Packet::PubAck(ack)).await.map(|()| None),
            QoS::ExactlyOnce => self.feed(&Packet::PubRec(ack)).await.map(|()| None),
        }
    }

    /// Routes a publish (and stores it if retained), fires the publish, offline-message and
    /// drop hooks; returns the number of deliveries and the store ticket they depend on.
    /// `into`: another mountpoint an `auth_on_publish` modifier chose.
    fn route(
        &self,
        p: &Publish,
        acl: Option<&crate::hooks::MatchedAcl>,
        into: Option<&str>,
    ) -> (usize, Option<Ticket>, Option<Congested>) {
        let mountpoint = into.unwrap_or(&self.mountpoint);
        let message = Arc::new(Message::from_publish(
            p,
            p.topic.as_str().into(),
            Some(self.client_id.clone()),
        ));
        let mut ticket = None;
        if p.retain {
            ticket = self.engine.retain(mountpoint, message.clone());
        }
        let hooks = self.engine.hooks();
        let report = hooks.wants(Hook::OnOfflineMessage) || hooks.wants(Hook::OnMessageDrop);
        let routed = self.engine.publish(mountpoint, &message, report);
        let ticket = ticket.max(routed.ticket);
        if routed.queued == 0 {
            Metrics::inc(&self.engine.metrics().router_matches_none);
        }
        let (want_publish, want_drop) = (
            hooks.wants(Hook::OnPublish),
            hooks.wants(Hook::OnMessageDrop),
        );
        if want_publish || report {
            let mut info = publish_info(p);
            if want_publish {
                hooks.notify(&Notification::Publish {
                    client: &self.info,
                    message: info,
                    acl,
                });
            }
            self.engine.report_queued(&self.mountpoint, &routed, info);
            if routed.queued == 0 && routed.notable.is_empty() && want_drop {
                (info.qos, info.retain) = (p.qos, p.retain);
                hooks.notify(&Notification::MessageDrop {
                    mountpoint: &self.mountpoint,
                    client_id: &self.client_id,
                    session_id: &self.info.session_id,
                    message: info,
                    reason: "no_matching_subscribers",
                    acl,
                });
            }
        }
        (routed.queued, ticket, routed.congested)
    }
}

/// A PUBLISH as hooks see it.
fn publish_info(p: &Publish) -> MessageInfo<'_> {
    MessageInfo {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: &p.properties,
    }
}
