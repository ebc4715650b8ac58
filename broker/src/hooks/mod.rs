//! The hook API: the points where the broker asks plugins (auth hooks) and tells them
//! (notification hooks), as VerneMQ's plugin hooks do. Plugins see only this module.
//!
//! - Auth hooks (`auth_on_register`, `auth_on_publish`, `auth_on_subscribe`) are chained by
//!   plugin priority: the first plugin that answers `Ok` or `Error` decides; `Next` asks the
//!   following one. They are async, so a plugin may ask a remote service.
//! - Notification hooks are one synchronous call, [`Plugin::notify`], that must not block: a
//!   plugin that does I/O queues the work (the events sidecar encodes and enqueues a frame).
//!
//! VerneMQ's `_m5` variants are the same hook points: [`ClientInfo::protocol`] says which MQTT
//! version the client speaks, and v5 properties are present when it is 5.
//!
//! Nothing is built for a hook no plugin wants: [`Hooks::wants`] is checked first.

pub mod args;
mod chain;

pub use chain::Hooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::mqtt::{Properties, Protocol, QoS, SubAckReason, SubOptions};

/// The refusal reason VerneMQ's `vmq_passwd` gives (`{error, invalid_credentials}`): the only
/// one an MQTT 3 client is told as "bad user name or password" (CONNACK 4); any other refusal
/// is "not authorized" (5).
pub const INVALID_CREDENTIALS: &str = "invalid_credentials";

/// Every hook point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Hook {
    /// May this client connect?
    AuthOnRegister,
    /// May this client publish this?
    AuthOnPublish,
    /// May this client subscribe to this?
    AuthOnSubscribe,
    /// A client connected.
    OnRegister,
    /// A client's CONNECT was refused.
    OnRegisterFailed,
    /// A publish was accepted and routed.
    OnPublish,
    /// A subscribe was handled.
    OnSubscribe,
    /// An unsubscribe was handled.
    OnUnsubscribe,
    /// A PUBLISH was sent to a subscriber.
    OnDeliver,
    /// A subscriber acknowledged a QoS 1/2 message.
    OnDeliveryComplete,
    /// A message was queued for an offline session.
    OnOfflineMessage,
    /// A session attached to its queue.
    OnClientWakeup,
    /// A persistent session's client went away.
    OnClientOffline,
    /// A clean session's client went away.
    OnClientGone,
    /// An offline session expired.
    OnSessionExpired,
    /// A message was dropped.
    OnMessageDrop,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 16] = [
        Hook::AuthOnRegister,
        Hook::AuthOnPublish,
        Hook::AuthOnSubscribe,
        Hook::OnRegister,
        Hook::OnRegisterFailed,
        Hook::OnPublish,
        Hook::OnSubscribe,
        Hook::OnUnsubscribe,
        Hook::OnDeliver,
        Hook::OnDeliveryComplete,
        Hook::OnOfflineMessage,
        Hook::OnClientWakeup,
        Hook::OnClientOffline,
        Hook::OnClientGone,
        Hook::OnSessionExpired,
        Hook::OnMessageDrop,
    ];

    /// The name VerneMQ uses (`on_publish`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Hook::AuthOnRegister => "auth_on_register",
            Hook::AuthOnPublish => "auth_on_publish",
            Hook::AuthOnSubscribe => "auth_on_subscribe",
            Hook::OnRegister => "on_register",
            Hook::OnRegisterFailed => "on_register_failed",
            Hook::OnPublish => "on_publish",
            Hook::OnSubscribe => "on_subscribe",
            Hook::OnUnsubscribe => "on_unsubscribe",
            Hook::OnDeliver => "on_deliver",
            Hook::OnDeliveryComplete => "on_delivery_complete",
            Hook::OnOfflineMessage => "on_offline_message",
            Hook::OnClientWakeup => "on_client_wakeup",
            Hook::OnClientOffline => "on_client_offline",
            Hook::OnClientGone => "on_client_gone",
            Hook::OnSessionExpired => "on_session_expired",
            Hook::OnMessageDrop => "on_message_drop",
        }
    }

    /// Parses a hook name; the `_m5` suffix is accepted and means the same hook.
    pub fn parse(name: &str) -> Option<Hook> {
        let name = name.strip_suffix("_m5").unwrap_or(name);
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }

    /// This hook's bit in a [`HookSet`].
    pub fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

/// A set of hooks, as a bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookSet(pub u32);

impl HookSet {
    /// Whether `hook` is in the set.
    pub fn contains(self, hook: Hook) -> bool {
        self.0 & hook.bit() != 0
    }

    /// The set with `hook` added.
    pub fn with(self, hook: Hook) -> HookSet {
        HookSet(self.0 | hook.bit())
    }

    /// The hooks in the set.
    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |h| self.contains(*h))
    }
}

/// The ACL entry that authorized a publish or subscribe, reported in events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchedAcl {
    /// The ACL's label.
    pub name: String,
    /// The pattern that matched.
    pub pattern: String,
}

/// Who a hook is about: one MQTT connection of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Mountpoint of the client's listener.
    pub mountpoint: String,
    /// Client id.
    pub client_id: Arc<str>,
    /// User name from CONNECT.
    pub username: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
    /// A UUIDv4 identifying this MQTT connection.
    pub session_id: Arc<str>,
    /// The client's MQTT version.
    pub protocol: Protocol,
}

/// Why a CONNECT was refused (the events sidecar's `RegistrationFailureReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterFailure {
    /// No plugin accepted the client and anonymous access is off.
    NoMatchingHookFound,
    /// Wrong user name or password.
    InvalidCredentials,
    /// The client may not connect.
    NotAuthorized,
}

/// Why a client's connection ended (the events sidecar's `Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    NormalDisconnect,
    /// Another connection took the session over.
    SessionTakenOver,
    /// The broker closed it (shutdown, administrative action).
    AdministrativeAction,
    /// Keep-alive expired.
    KeepAliveTimeout,
    /// The client broke the protocol.
    ProtocolError,
    /// The client exceeded the receive maximum.
    ReceiveMaxExceeded,
    /// The socket closed or failed without DISCONNECT.
    TcpClosed,
}

/// A message an auth hook is asked about and a notification reports: borrowed from the
/// broker's own message, so telling plugins about it copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfo<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// v5 properties (empty for v3).
    pub properties: &'a Properties,
}

/// What an auth hook answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult<M> {
    /// Allowed as is (with the ACL that matched, if known).
    Ok(Option<MatchedAcl>),
    /// Allowed with changes.
    OkWith(M, Option<MatchedAcl>),
    /// This plugin has no opinion: ask the next one.
    Next,
    /// Refused, with the plugin's reason if it gave one (logged, and passed to the
    /// `on_register_failed` notification).
    Error(Option<String>),
}

impl<M> AuthResult<M> {
    /// Refused without a reason.
    pub const fn refused() -> AuthResult<M> {
        AuthResult::Error(None)
    }

    /// Refused, saying why.
    pub fn refused_because(reason: impl Into<String>) -> AuthResult<M> {
        AuthResult::Error(Some(reason.into()))
    }
}

/// Changes an `auth_on_register` may make to the client's session, as VerneMQ's
/// `auth_on_register` modifiers (`specs/webhooks.md` 4.1). The broker applies `mountpoint`,
/// `client_id`, `username`, `clean_session`, `max_message_size`, `max_inflight_messages` and
/// the queue sizes to the connection it accepts; the others are carried for plugins that
/// speak VerneMQ's protocol and have no effect here yet (the connection logs them).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterModifiers {
    /// Another mountpoint for this client.
    pub mountpoint: Option<String>,
    /// Another client id.
    pub client_id: Option<String>,
    /// Another user name.
    pub username: Option<String>,
    /// Clean session (v3) / clean start (v5), overriding CONNECT's.
    pub clean_session: Option<bool>,
    /// Largest packet this client may send, in bytes.
    pub max_message_size: Option<u32>,
    /// Unacknowledged QoS 1/2 messages towards this client.
    pub max_inflight_messages: Option<u16>,
    /// Its queue while online.
    pub max_online_messages: Option<usize>,
    /// Its queue while offline.
    pub max_offline_messages: Option<usize>,
    /// Seconds after which the connection is closed (not applied yet).
    pub max_connection_lifetime: Option<u64>,
    /// Milliseconds between redeliveries (not applied yet).
    pub retry_interval: Option<u64>,
    /// Deliver at the subscription's QoS rather than the publish's (not applied yet).
    pub upgrade_qos: Option<bool>,
    /// Publishes per second allowed (not applied yet).
    pub max_message_rate: Option<u32>,
    /// `prefer_local`, `local_only` or `random` (not applied yet).
    pub shared_subscription_policy: Option<String>,
    /// `fifo` or `lifo` (not applied yet).
    pub queue_type: Option<String>,
    /// During a netsplit: may this client register, publish, subscribe, unsubscribe.
    pub allow_register: Option<bool>,
    /// See `allow_register`.
    pub allow_publish: Option<bool>,
    /// See `allow_register`.
    pub allow_subscribe: Option<bool>,
    /// See `allow_register`.
    pub allow_unsubscribe: Option<bool>,
    /// Queue draining (not applied: no queue migration here).
    pub max_drain_time: Option<u64>,
    /// Queue draining (not applied: no queue migration here).
    pub max_msgs_per_drain_step: Option<u64>,
}

impl RegisterModifiers {
    /// The names of the modifiers set that the broker does not apply yet.
    pub fn not_applied(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |set: bool, name| {
            if set {
                v.push(name)
            }
        };
        note(
            self.max_connection_lifetime.is_some(),
            "max_connection_lifetime",
        );
        note(self.retry_interval.is_some(), "retry_interval");
        note(self.upgrade_qos.is_some(), "upgrade_qos");
        note(self.max_message_rate.is_some(), "max_message_rate");
        note(
            self.shared_subscription_policy.is_some(),
            "shared_subscription_policy",
        );
        note(self.queue_type.is_some(), "queue_type");
        note(self.allow_register.is_some(), "allow_register");
        note(self.allow_publish.is_some(), "allow_publish");
        note(self.allow_subscribe.is_some(), "allow_subscribe");
        note(self.allow_unsubscribe.is_some(), "allow_unsubscribe");
        note(self.max_drain_time.is_some(), "max_drain_time");
        note(
            self.max_msgs_per_drain_step.is_some(),
            "max_msgs_per_drain_step",
        );
        v
    }
}

/// Changes an `auth_on_publish` may make.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishModifiers {
    /// New topic.
    pub topic: Option<String>,
    /// New payload.
    pub payload: Option<Bytes>,
    /// New QoS.
    pub qos: Option<QoS>,
    /// New retain flag.
    pub retain: Option<bool>,
    /// New v5 properties (replacing the message's whole property map, as VerneMQ does);
    /// boxed, as they are rare and large: every answer to every publish carries this.
    pub properties: Option<Box<Properties>>,
    /// Publish into this mountpoint instead of the client's.
    pub mountpoint: Option<String>,
    /// Stop reading from the publisher for this long (VerneMQ's `throttle`, in ms there).
    pub throttle: Option<Duration>,
}

/// Changes an `on_deliver` may make to a message before it is sent to one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliverModifiers {
    /// New topic.
    pub topic: Option<String>,
    /// New payload.
    pub payload: Option<Bytes>,
    /// New v5 properties (replacing the message's).
    pub properties: Option<Properties>,
}

/// One topic of a SUBSCRIBE, as `auth_on_subscribe` is asked about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeTopic {
    /// The filter as asked.
    pub filter: String,
    /// The options as asked (the QoS is the maximum asked for).
    pub options: SubOptions,
}

/// A plugin's answer about one topic of a SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicVerdict {
    /// Allowed: with this filter and these options (the asked ones, or rewritten).
    Allow {
        /// The filter to subscribe.
        filter: String,
        /// The options (maximum QoS, v5 flags).
        options: SubOptions,
        /// The ACL entry that allowed it.
        acl: Option<MatchedAcl>,
    },
    /// Refused, with the SUBACK reason.
    Refuse(SubAckReason),
    /// No opinion: the next plugin is asked about this topic.
    Pass,
}

/// A CONNECT as `auth_on_register` sees it.
#[derive(Clone, Debug)]
pub struct RegisterRequest<'a> {
    /// The client.
    pub client: &'a ClientInfo,
    /// Password.
    pub password: Option<&'a Bytes>,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// v5 CONNECT properties.
    pub properties: &'a Properties,
}

/// One topic of a handled SUBSCRIBE, as `on_subscribe` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribedTopic {
    /// The filter (as subscribed, after any rewrite).
    pub filter: String,
    /// The granted QoS, or 128 when refused.
    pub qos: u8,
    /// The subscription's options.
    pub options: SubOptions,
    /// The ACL entry that allowed it.
    pub acl: Option<MatchedAcl>,
}

impl SubscribedTopic {
    /// Whether the topic was granted.
    pub fn granted(&self) -> bool {
        self.qos <= 2
    }
}

/// A notification: something happened.
#[derive(Clone, Copy, Debug)]
pub enum Notification<'a> {
    /// A client connected.
    Register {
        /// The client.
        client: &'a ClientInfo,
        /// v5 CONNECT properties (empty for v3).
        properties: &'a Properties,
    },
    /// A CONNECT was refused.
    RegisterFailed {
        /// The refused client (its session id is fresh and unused).
        client: &'a ClientInfo,
        /// Clean session flag of the CONNECT.
        clean_session: bool,
        /// Why.
        reason: RegisterFailure,
        /// The refusing plugin's own words, if it gave any.
        reason_text: Option<&'a str>,
    },
    /// A publish was accepted and routed.
    Publish {
        /// The publisher.
        client: &'a ClientInfo,
        /// The message as routed.
        message: MessageInfo<'a>,
        /// The ACL that allowed it.
        acl: Option<&'a MatchedAcl>,
    },
    /// A subscribe was handled.
    Subscribe {
        /// The subscriber.
        client: &'a ClientInfo,
        /// Every topic of the SUBSCRIBE: granted ones as subscribed, refused ones with 128.
        topics: &'a [SubscribedTopic],
        /// The SUBSCRIBE's v5 properties.
        properties: &'a Properties,
    },
    /// An unsubscribe was handled.
    Unsubscribe {
        /// The client.
        client: &'a ClientInfo,
        /// The filters unsubscribed (after any `on_unsubscribe` rewrite).
        topics: &'a [String],
    },
    /// A PUBLISH was sent to a subscriber.
    Deliver {
        /// The subscriber.
        client: &'a ClientInfo,
        /// The message as sent.
        message: MessageInfo<'a>,
        /// Whether it came from the offline queue.
        persisted: bool,
        /// The ACL that allowed the subscription.
        acl: Option<&'a MatchedAcl>,
    },
    /// A subscriber acknowledged a QoS 1/2 message (PUBACK or PUBREC).
    DeliveryComplete {
        /// The subscriber.
        client: &'a ClientInfo,
        /// The message.
        message: MessageInfo<'a>,
        /// Whether it came from the offline queue.
        persisted: bool,
        /// The ACL that allowed the subscription.
        acl: Option<&'a MatchedAcl>,
    },
    /// A message was queued for an offline session.
    OfflineMessage {
        /// Mountpoint.
        mountpoint: &'a str,
        /// The offline client.
        client_id: &'a str,
        /// Its last connection's session id.
        session_id: &'a str,
        /// The message.
        message: MessageInfo<'a>,
    },
    /// A message was dropped.
    MessageDrop {
        /// Mountpoint.
        mountpoint: &'a str,
        /// The client it was for (or from, for no matching subscribers).
        client_id: &'a str,
        /// That client's session id.
        session_id: &'a str,
        /// The message.
        message: MessageInfo<'a>,
        /// `queue_full`, `expired`, `no_matching_subscribers`, `too_large`.
        reason: &'a str,
        /// The ACL involved, if any.
        acl: Option<&'a MatchedAcl>,
    },
    /// A session attached to its queue.
    ClientWakeup {
        /// The client.
        client: &'a ClientInfo,
    },
    /// A persistent session's client went away.
    ClientOffline {
        /// The client.
        client: &'a ClientInfo,
        /// Why.
        reason: DisconnectReason,
    },
    /// A clean session's client went away.
    ClientGone {
        /// The client.
        client: &'a ClientInfo,
        /// Why.
        reason: DisconnectReason,
    },
    /// An offline session expired.
    SessionExpired {
        /// Mountpoint.
        mountpoint: &'a str,
        /// Client id.
        client_id: &'a str,
        /// Its last connection's session id.
        session_id: &'a str,
    },
}

impl Notification<'_> {
    /// The hook this notification is for.
    pub fn hook(&self) -> Hook {
        match self {
            Notification::Register { .. } => Hook::OnRegister,
            Notification::RegisterFailed { .. } => Hook::OnRegisterFailed,
            Notification::Publish { .. } => Hook::OnPublish,
            Notification::Subscribe { .. } => Hook::OnSubscribe,
            Notification::Unsubscribe { .. } => Hook::OnUnsubscribe,
            Notification::Deliver { .. } => Hook::OnDeliver,
            Notification::DeliveryComplete { .. } => Hook::OnDeliveryComplete,
            Notification::OfflineMessage { .. } => Hook::OnOfflineMessage,
            Notification::MessageDrop { .. } => Hook::OnMessageDrop,
            Notification::ClientWakeup { .. } => Hook::OnClientWakeup,
            Notification::ClientOffline { .. } => Hook::OnClientOffline,
            Notification::ClientGone { .. } => Hook::OnClientGone,
            Notification::SessionExpired { .. } => Hook::OnSessionExpired,
        }
    }
}

/// A plugin: registered at start from config (`plugins.<name> = on`).
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name (`vmq_events_sidecar`).
    fn name(&self) -> &str;

    /// Lower runs first in auth chains.
    fn priority(&self) -> i32 {
        0
    }

    /// Whether the plugin wants `hook` now (may change at run time).
    fn wants(&self, hook: Hook) -> bool;

    /// May this client connect?
    fn auth_on_register<'a>(
        &'a self,
        _req: &'a RegisterRequest<'a>,
    ) -> BoxFuture<'a, AuthResult<RegisterModifiers>> {
        Box::pin(async { AuthResult::Next })
    }

    /// `auth_on_publish` answered without waiting, when the plugin can (a cache, rules in
    /// memory): `Some` is its answer, `None` sends the chain to [`Plugin::auth_on_publish`].
    /// The session then decides most publishes without making a future per plugin.
    fn auth_on_publish_now(
        &self,
        _client: &ClientInfo,
        _message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        None
    }

    /// May this client publish this? May rewrite it.
    fn auth_on_publish<'a>(
        &'a self,
        _client: &'a ClientInfo,
        _message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        Box::pin(async { AuthResult::Next })
    }

    /// [`Plugin::auth_on_publish`] for publishes one client sent together: one answer per
    /// message, in order. A plugin that answers from elsewhere (a Lua state, a server)
    /// overrides it to ask about them in one go instead of one round trip each; the default
    /// asks about each.
    fn auth_on_publish_batch<'a>(
        &'a self,
        client: &'a ClientInfo,
        messages: &'a [&'a MessageInfo<'a>],
    ) -> BoxFuture<'a, Vec<AuthResult<PublishModifiers>>> {
        Box::pin(futures::future::join_all(
            messages.iter().map(|m| self.auth_on_publish(client, m)),
        ))
    }

    /// May this client subscribe to these topics? Asked once per SUBSCRIBE with the topics no
    /// earlier plugin decided. `Ok`: all allowed as asked; `OkWith`: one [`TopicVerdict`] per
    /// topic, in order (a list of another length is a refusal); `Error`: all refused.
    fn auth_on_subscribe<'a>(
        &'a self,
        _client: &'a ClientInfo,
        _topics: &'a [SubscribeTopic],
        _properties: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<TopicVerdict>>> {
        Box::pin(async { AuthResult::Next })
    }

    /// Whether this plugin answers `on_deliver` or `on_unsubscribe` with changes (it is then
    /// awaited before the PUBLISH or the UNSUBACK, as VerneMQ's conditional chains are).
    /// Plugins that only observe those hooks get [`Plugin::notify`] and return `false`.
    fn modifies(&self, _hook: Hook) -> bool {
        false
    }

    /// May rewrite a message before it is sent to this subscriber. Errors and `Next` from
    /// everyone leave the message as it is: it is delivered in any case.
    fn on_deliver<'a>(
        &'a self,
        _client: &'a ClientInfo,
        _message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<DeliverModifiers>> {
        Box::pin(async { AuthResult::Next })
    }

    /// May replace the filters of an UNSUBSCRIBE. Errors and `Next` from everyone leave them
    /// as asked.
    fn on_unsubscribe<'a>(
        &'a self,
        _client: &'a ClientInfo,
        _topics: &'a [String],
        _properties: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<String>>> {
        Box::pin(async { AuthResult::Next })
    }

    /// Something happened. Must not block: queue any I/O.
    fn notify(&self, _event: &Notification<'_>) {}
}

#[cfg(test)]
mod tests;
