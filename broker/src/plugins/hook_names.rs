//! The 22 hook names VerneMQ's webhooks and Lua scripts register for (`specs/webhooks.md` 3,
//! `specs/lua.md` 3): each is a broker hook and a protocol family, since only MQTT 5 clients
//! call the `_m5` hooks and only MQTT 3 clients the others.

use crate::hooks::{Hook, Notification};

/// What a plugin's answer may say, by hook group (`specs/webhooks.md` 2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// `ok` (with `modifiers`), `next` or `{"error": ...}`: the chain waits for it.
    Verdict,
    /// As `Verdict`, but the changes are a top-level `topics` list (v3 `auth_on_subscribe`
    /// and `on_unsubscribe`).
    TopLevelTopics,
    /// Anything: the answer is ignored, and nobody waits for it.
    Notification,
}

/// A hook name as webhooks know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookName {
    /// `auth_on_register_m5`, ...
    pub name: &'static str,
    /// The broker hook it is called from; `None` for `on_auth_m5` (no AUTH packets here).
    pub hook: Option<Hook>,
    /// Called for MQTT 5 clients (the `_m5` names) or MQTT 3 ones; hooks with no client
    /// protocol (offline messages, expiry) are called for both.
    pub v5: Option<bool>,
    /// How its answers are read.
    pub group: Group,
}

const fn name(name: &'static str, hook: Hook, v5: Option<bool>, group: Group) -> HookName {
    HookName {
        name,
        hook: Some(hook),
        v5,
        group,
    }
}

use Group::{Notification as N, TopLevelTopics as T, Verdict as V};

/// Every registrable hook, in VerneMQ's order.
pub const HOOKS: [HookName; 22] = [
    name("auth_on_register", Hook::AuthOnRegister, Some(false), V),
    name("auth_on_publish", Hook::AuthOnPublish, Some(false), V),
    name("auth_on_subscribe", Hook::AuthOnSubscribe, Some(false), T),
    name("on_register", Hook::OnRegister, Some(false), N),
    name("on_publish", Hook::OnPublish, Some(false), N),
    name("on_subscribe", Hook::OnSubscribe, Some(false), N),
    name("on_unsubscribe", Hook::OnUnsubscribe, Some(false), T),
    name("on_deliver", Hook::OnDeliver, Some(false), V),
    name("on_offline_message", Hook::OnOfflineMessage, None, N),
    name("on_client_wakeup", Hook::OnClientWakeup, None, N),
    name("on_client_offline", Hook::OnClientOffline, None, N),
    name("on_client_gone", Hook::OnClientGone, None, N),
    name("on_session_expired", Hook::OnSessionExpired, None, N),
    name("auth_on_register_m5", Hook::AuthOnRegister, Some(true), V),
    name("auth_on_publish_m5", Hook::AuthOnPublish, Some(true), V),
    name("auth_on_subscribe_m5", Hook::AuthOnSubscribe, Some(true), V),
    name("on_register_m5", Hook::OnRegister, Some(true), N),
    name("on_publish_m5", Hook::OnPublish, Some(true), N),
    name("on_subscribe_m5", Hook::OnSubscribe, Some(true), N),
    name("on_unsubscribe_m5", Hook::OnUnsubscribe, Some(true), V),
    name("on_deliver_m5", Hook::OnDeliver, Some(true), V),
    HookName {
        name: "on_auth_m5",
        hook: None,
        v5: Some(true),
        group: V,
    },
];

/// Hook names VerneMQ counts in its metrics but does not let webhooks register for.
pub const UNREGISTRABLE: [&str; 3] = [
    "on_message_drop",
    "on_topic_unsubscribed",
    "on_config_change",
];

/// The index of a hook name in [`HOOKS`].
pub fn parse(name: &str) -> Option<usize> {
    HOOKS.iter().position(|h| h.name == name)
}

/// The registrable names, comma separated (for error messages).
pub fn list() -> String {
    HOOKS.iter().map(|h| h.name).collect::<Vec<_>>().join(", ")
}

impl HookName {
    /// Whether it is `hook` as called for a client of this protocol (`None`: no client).
    pub fn is(&self, hook: Hook, v5: Option<bool>) -> bool {
        self.hook == Some(hook)
            && match (self.v5, v5) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }
}

/// Whom a notification VerneMQ's plugins get is about: the client id, and whether the client
/// speaks MQTT 5 (`None` for notifications without a connection: offline messages, expiry).
/// `None` for the notifications webhooks and Lua have no notification hook for.
pub fn subject<'a>(event: &Notification<'a>) -> Option<(Option<bool>, &'a str)> {
    Some(match *event {
        Notification::Register { client, .. }
        | Notification::Publish { client, .. }
        | Notification::Subscribe { client, .. }
        | Notification::ClientWakeup { client }
        | Notification::ClientOffline { client, .. }
        | Notification::ClientGone { client, .. } => {
            (Some(client.protocol.is_v5()), &*client.client_id)
        }
        Notification::OfflineMessage { client_id, .. }
        | Notification::SessionExpired { client_id, .. } => (None, client_id),
        _ => return None,
    })
}
