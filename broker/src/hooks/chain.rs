//! The chains: every plugin in priority order, asked as VerneMQ's plugin chains ask them
//! (the first `Ok` or `Error` decides an auth hook, `Next` asks the following plugin), and
//! every notification handed to the plugins that want it.

use std::sync::Arc;

use super::{
    AuthResult, ClientInfo, DeliverModifiers, Hook, MessageInfo, Notification, Plugin,
    PublishModifiers, RegisterModifiers, RegisterRequest, SubscribeTopic, TopicVerdict,
};
use crate::mqtt::{Properties, SubAckReason};

/// The plugins of a broker, in priority order.
#[derive(Default)]
pub struct Hooks {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

impl Hooks {
    /// Registers the plugins, sorted by priority (stable: config order among equals).
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Hooks {
        plugins.sort_by_key(|p| p.priority());
        Hooks { plugins }
    }

    /// The registered plugins.
    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    /// Whether any plugin wants `hook`: check before building a notification.
    #[inline]
    pub fn wants(&self, hook: Hook) -> bool {
        !self.plugins.is_empty() && self.plugins.iter().any(|p| p.wants(hook))
    }

    /// Tells every plugin that wants it.
    pub fn notify(&self, event: &Notification<'_>) {
        let hook = event.hook();
        for p in &self.plugins {
            if p.wants(hook) {
                p.notify(event);
            }
        }
    }

    /// Runs the `auth_on_register` chain. `None`: nobody decided.
    pub async fn auth_on_register(
        &self,
        req: &RegisterRequest<'_>,
    ) -> Option<AuthResult<RegisterModifiers>> {
        for p in self
            .plugins
            .iter()
            .filter(|p| p.wants(Hook::AuthOnRegister))
        {
            match p.auth_on_register(req).await {
                AuthResult::Next => {}
                decided => return Some(decided),
            }
        }
        None
    }

    /// Runs the `auth_on_publish` chain. `None`: nobody decided. Plugins that can answer at
    /// once do (see [`Plugin::auth_on_publish_now`]); the first that cannot, and those after
    /// it, are awaited.
    pub async fn auth_on_publish(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        let mut waiting = None;
        for (i, p) in self.plugins.iter().enumerate() {
            if !p.wants(Hook::AuthOnPublish) {
                continue;
            }
            match p.auth_on_publish_now(client, message) {
                Some(AuthResult::Next) => {}
                Some(decided) => return Some(decided),
                None => {
                    waiting = Some(i);
                    break;
                }
            }
        }
        let from = waiting?;
        for p in self.plugins[from..]
            .iter()
            .filter(|p| p.wants(Hook::AuthOnPublish))
        {
            match p.auth_on_publish(client, message).await {
                AuthResult::Next => {}
                decided => return Some(decided),
            }
        }
        None
    }

    /// Runs the `auth_on_publish` chain for publishes one client sent together: the answer
    /// for each message is the one [`Hooks::auth_on_publish`] would give, but each plugin is
    /// asked once about the messages still undecided when it comes to it (after those it can
    /// answer at once), so a plugin that answers from elsewhere makes one round trip per
    /// batch.
    pub async fn auth_on_publish_batch(
        &self,
        client: &ClientInfo,
        messages: &[MessageInfo<'_>],
    ) -> Vec<Option<AuthResult<PublishModifiers>>> {
        let mut answers: Vec<Option<AuthResult<PublishModifiers>>> =
            messages.iter().map(|_| None).collect();
        let mut open: Vec<usize> = (0..messages.len()).collect();
        for p in self.plugins.iter().filter(|p| p.wants(Hook::AuthOnPublish)) {
            let mut later = Vec::new();
            for i in open.drain(..) {
                match p.auth_on_publish_now(client, &messages[i]) {
                    Some(AuthResult::Next) => later.push((i, false)),
                    Some(decided) => answers[i] = Some(decided),
                    None => later.push((i, true)),
                }
            }
            let asked: Vec<&MessageInfo<'_>> = later
                .iter()
                .filter(|(_, ask)| *ask)
                .map(|&(i, _)| &messages[i])
                .collect();
            let mut replies = if asked.is_empty() {
                Vec::new()
            } else {
                p.auth_on_publish_batch(client, &asked).await
            }
            .into_iter();
            for (i, ask) in later {
                match if ask { replies.next() } else { None } {
                    Some(AuthResult::Next) | None => open.push(i),
                    Some(decided) => answers[i] = Some(decided),
                }
            }
            if open.is_empty() {
                break;
            }
        }
        answers
    }

    /// Runs the `auth_on_subscribe` chain: each plugin is asked about the topics no earlier
    /// plugin decided; an `Error` refuses all of those and ends the chain. One verdict per
    /// topic; `Pass` where nobody decided.
    pub async fn auth_on_subscribe(
        &self,
        client: &ClientInfo,
        topics: &[SubscribeTopic],
        properties: &Properties,
    ) -> Vec<TopicVerdict> {
        let mut verdicts = vec![TopicVerdict::Pass; topics.len()];
        for p in self
            .plugins
            .iter()
            .filter(|p| p.wants(Hook::AuthOnSubscribe))
        {
            let open: Vec<usize> = (0..topics.len())
                .filter(|&i| verdicts[i] == TopicVerdict::Pass)
                .collect();
            if open.is_empty() {
                break;
            }
            let asked: Vec<SubscribeTopic> = open.iter().map(|&i| topics[i].clone()).collect();
            match p.auth_on_subscribe(client, &asked, properties).await {
                AuthResult::Next => {}
                AuthResult::Ok(acl) => {
                    for (&i, t) in open.iter().zip(asked) {
                        verdicts[i] = TopicVerdict::Allow {
                            filter: t.filter,
                            options: t.options,
                            acl: acl.clone(),
                        };
                    }
                }
                AuthResult::OkWith(answers, _) if answers.len() == open.len() => {
                    for (&i, v) in open.iter().zip(answers) {
                        verdicts[i] = v;
                    }
                }
                AuthResult::OkWith(..) | AuthResult::Error(_) => {
                    for &i in &open {
                        verdicts[i] = TopicVerdict::Refuse(SubAckReason::NotAuthorized);
                    }
                    break;
                }
            }
        }
        verdicts
    }

    /// Whether any plugin answers `hook` (`on_deliver`, `on_unsubscribe`) with changes.
    #[inline]
    pub fn modifies(&self, hook: Hook) -> bool {
        !self.plugins.is_empty() && self.plugins.iter().any(|p| p.modifies(hook))
    }

    /// Runs the `on_deliver` chain: the first plugin answering `ok` decides; errors and
    /// `next` from everyone mean no change.
    pub async fn on_deliver(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<DeliverModifiers> {
        for p in self.plugins.iter().filter(|p| p.modifies(Hook::OnDeliver)) {
            match p.on_deliver(client, message).await {
                AuthResult::Next => {}
                AuthResult::OkWith(m, _) => return Some(m),
                AuthResult::Ok(_) | AuthResult::Error(_) => return None,
            }
        }
        None
    }

    /// Runs the `on_unsubscribe` chain: the filters to unsubscribe instead, if a plugin
    /// answered `ok` with some.
    pub async fn on_unsubscribe(
        &self,
        client: &ClientInfo,
        topics: &[String],
        properties: &Properties,
    ) -> Option<Vec<String>> {
        for p in self
            .plugins
            .iter()
            .filter(|p| p.modifies(Hook::OnUnsubscribe))
        {
            match p.on_unsubscribe(client, topics, properties).await {
                AuthResult::Next => {}
                AuthResult::OkWith(m, _) => return Some(m),
                AuthResult::Ok(_) | AuthResult::Error(_) => return None,
            }
        }
        None
    }
}
