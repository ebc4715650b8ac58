//! `vmq_webhooks`: VerneMQ's webhooks, so existing endpoints work unchanged
//! (`specs/webhooks.md`): the same config keys, request bodies, `vernemq-hook` header,
//! answers, modifiers, cache, admin commands and metric names.
//!
//! - Verdict hooks (`auth_on_*`, `on_deliver`, `on_unsubscribe`) are awaited: a hook's
//!   endpoints are asked in registration order until one answers `ok` or fails; `next` asks the
//!   next endpoint, then the next plugin. HTTP failures, timeouts, bad JSON and bad modifiers
//!   are errors (an auth hook refuses), never `next`.
//! - Notification hooks never make a session wait (VerneMQ's do): the body goes into the
//!   endpoint's bounded queue (`endpoint.rs`).
//! - `_m5` webhooks are called for MQTT 5 clients, the others for MQTT 3 ones.
//! - Runtime registrations (`vmq-admin webhooks register`) are not persisted, as in VerneMQ:
//!   add them to `vernemq.conf` to keep them.

mod admin;
mod cache;
mod client;
pub mod config;
mod endpoint;
mod metrics;
mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::Hosted;
use crate::config::{Config, ConfigError, PluginSetting};
use crate::hooks::args::{self, Encoding, HookArgs, TopicArgs};
use crate::hooks::{
    AuthResult, ClientInfo, DeliverModifiers, Hook, HookSet, MessageInfo, Notification, Plugin,
    PublishModifiers, RegisterModifiers, RegisterRequest, SubscribeTopic, TopicVerdict,
};
use crate::mqtt::Properties;
use crate::plugins::hook_names::{self, Group, HOOKS};
use crate::plugins::modifiers;
use cache::{Cache, CacheStats, Cached, Key};
use config::{WebhookSpec, WebhooksConfig};
use endpoint::{Endpoint, Job, Shared};

/// The plugin's name.
pub const NAME: &str = "vmq_webhooks";

/// The usage of its commands.
pub const USAGE: &str = "  webhooks show
  webhooks register hook=<Hook> endpoint=<Url> [--base64payload=true|false] [--no_payload=true|false] [--response_timeout=<ms>]
  webhooks deregister hook=<Hook> endpoint=<Url>
  webhooks cache show [--reset]
  webhooks cache clear";

/// Checks the `vmq_webhooks.*` lines.
pub(super) fn check_settings(s: &[PluginSetting]) -> Result<(), ConfigError> {
    WebhooksConfig::from_settings(s).map(drop)
}

/// Starts the plugin from the `vmq_webhooks.*` lines.
pub(super) fn start_hosted(
    _config: &Config,
    s: &[PluginSetting],
    priority: i32,
) -> Result<Arc<dyn Hosted>, String> {
    let config = WebhooksConfig::from_settings(s).map_err(|e| e.to_string())?;
    Ok(Webhooks::start(config, priority)?)
}

/// One (hook, endpoint) pair.
#[derive(Debug)]
struct Registration {
    hook: usize,
    endpoint: Arc<Endpoint>,
    base64: bool,
    no_payload: bool,
    timeout: Duration,
    cache: Arc<CacheStats>,
}

impl Registration {
    fn encoding(&self) -> Encoding {
        if self.base64 {
            Encoding::Base64
        } else {
            Encoding::Text
        }
    }
}

/// How a hook's request is keyed in the cache, and its decision goes in and comes out.
struct Caching<'c, T> {
    /// Feeds the request's fields (without payload and peer port) to the key.
    fill: &'c (dyn Fn(&mut Key) + Send + Sync),
    to: fn(&T) -> Cached,
    from: fn(Cached) -> Option<T>,
}

/// The v5 properties of a request, in a cache key.
fn key_properties(k: &mut Key, v5: bool, p: &Properties) {
    if v5 && *p != Properties::default() {
        k.add(serde_json::to_vec(&args::properties(p, Encoding::Base64)).unwrap_or_default());
    }
}

/// What a verdict hook's endpoints decided.
enum Outcome<T> {
    Ok(T),
    Next,
    Error(String),
}

/// The webhooks plugin.
#[derive(Debug)]
pub struct Webhooks {
    registrations: RwLock<Arc<Vec<Arc<Registration>>>>,
    /// The hooks some registration is for (a [`HookSet`]).
    wanted: AtomicU32,
    /// Cache counters by (endpoint, hook), kept after deregistration as VerneMQ keeps them.
    cache_stats: Mutex<Vec<(String, usize, Arc<CacheStats>)>>,
    cache: Cache,
    shared: Shared,
    pool_max_connections: usize,
    queue_size: usize,
    priority: i32,
}

impl Webhooks {
    /// Starts the plugin with the config's webhooks (inside a tokio runtime).
    pub fn start(config: WebhooksConfig, priority: i32) -> Result<Arc<Webhooks>, String> {
        let shared = Shared {
            http: client::Http::new(&config)?,
            metrics: Arc::default(),
        };
        let w = Webhooks {
            registrations: RwLock::default(),
            wanted: AtomicU32::new(0),
            cache_stats: Mutex::default(),
            cache: Cache::new(config.cache_max_entries),
            shared,
            pool_max_connections: config.pool_max_connections,
            queue_size: config.queue_size,
            priority,
        };
        for spec in config.webhooks {
            // As VerneMQ: a second (hook, endpoint) pair is logged, not fatal.
            if let Err(e) = w.register(spec.clone()) {
                warn!(hook = HOOKS[spec.hook].name, endpoint = %spec.endpoint, "webhook not registered: {e}");
            }
        }
        Ok(Arc::new(w))
    }

    /// Registers a webhook after the existing ones of its hook.
    pub fn register(&self, spec: WebhookSpec) -> Result<(), String> {
        let mut regs = self.registrations.write();
        if regs
            .iter()
            .any(|r| r.hook == spec.hook && r.endpoint.url == spec.endpoint)
        {
            return Err("already_registered".into());
        }
        if HOOKS[spec.hook].hook.is_none() {
            warn!(
                endpoint = %spec.endpoint,
                "on_auth_m5 registered, but MQTT 5 enhanced authentication (AUTH) is not \
                 supported here: the webhook is never called"
            );
        }
        let endpoint = regs
            .iter()
            .find(|r| r.endpoint.url == spec.endpoint)
            .map(|r| r.endpoint.clone())
            .unwrap_or_else(|| {
                Endpoint::start(
                    spec.endpoint.clone(),
                    self.pool_max_connections,
                    self.queue_size,
                    &self.shared,
                )
            });
        let cache = {
            let mut stats = self.cache_stats.lock();
            match stats
                .iter()
                .find(|(e, h, _)| *e == spec.endpoint && *h == spec.hook)
            {
                Some((_, _, s)) => s.clone(),
                None => {
                    let s = Arc::new(CacheStats::default());
                    stats.push((spec.endpoint.clone(), spec.hook, s.clone()));
                    s
                }
            }
        };
        let mut list = (**regs).clone();
        list.push(Arc::new(Registration {
            hook: spec.hook,
            endpoint,
            base64: spec.base64,
            no_payload: spec.no_payload,
            timeout: spec.response_timeout,
            cache,
        }));
        self.set(&mut regs, list);
        Ok(())
    }

    /// Removes a webhook; its endpoint's queues close when no hook posts there any more.
    pub fn deregister(&self, hook: usize, url: &str) -> Result<(), String> {
        let mut regs = self.registrations.write();
        let Some(at) = regs
            .iter()
            .position(|r| r.hook == hook && r.endpoint.url == url)
        else {
            return Err("not_found".into());
        };
        let mut list = (**regs).clone();
        let gone = list.remove(at);
        if !list.iter().any(|r| r.endpoint.url == url) {
            gone.endpoint.close();
        }
        self.set(&mut regs, list);
        Ok(())
    }

    fn set(&self, regs: &mut Arc<Vec<Arc<Registration>>>, list: Vec<Arc<Registration>>) {
        let wanted = list
            .iter()
            .filter_map(|r| HOOKS[r.hook].hook)
            .fold(HookSet::default(), HookSet::with);
        *regs = Arc::new(list);
        self.wanted.store(wanted.0, Relaxed);
    }

    /// The registrations now (a snapshot: registering meanwhile does not disturb a call).
    fn snapshot(&self) -> Arc<Vec<Arc<Registration>>> {
        self.registrations.read().clone()
    }

    /// Posts `body` for a verdict hook, counting and logging failures.
    async fn call(&self, r: &Registration, body: Vec<u8>) -> Result<client::Reply, String> {
        let name = HOOKS[r.hook].name;
        let c = self.shared.metrics.hook(r.hook);
        let len = body.len() as u64;
        let started = Instant::now();
        let result = r
            .endpoint
            .post(&self.shared.http, name, body.into(), r.timeout)
            .await;
        c.requests.fetch_add(1, Relaxed);
        c.bytes_sent.fetch_add(len, Relaxed);
        c.elapsed_ms
            .fetch_add(started.elapsed().as_millis() as u64, Relaxed);
        result.map_err(|e| {
            if e == client::CallError::Timeout {
                c.timeouts.fetch_add(1, Relaxed);
            }
            self.failed(r, &e.to_string());
            e.to_string()
        })
    }

    fn failed(&self, r: &Registration, why: &str) {
        self.shared
            .metrics
            .hook(r.hook)
            .errors
            .fetch_add(1, Relaxed);
        warn!(endpoint = %r.endpoint.url, hook = HOOKS[r.hook].name, error = why, "webhook error");
    }

    /// Runs a verdict hook's endpoints: `args` builds the request for a registration,
    /// `parse` reads the changes of an `ok`, and `cache` (for the auth hooks) stores and finds
    /// `ok` answers.
    async fn chain<'a, T: Clone>(
        &self,
        hook: Hook,
        v5: bool,
        args: impl Fn(&Registration) -> HookArgs<'a>,
        parse: impl Fn(&Registration, Option<&Value>) -> Result<T, String>,
        cache: Option<Caching<'_, T>>,
    ) -> Outcome<T> {
        let regs = self.snapshot();
        for r in regs.iter().filter(|r| HOOKS[r.hook].is(hook, Some(v5))) {
            let h = &HOOKS[r.hook];
            let key = cache.as_ref().map(|c| {
                let mut k = Key::new(&r.endpoint.url, r.hook);
                (c.fill)(&mut k);
                k.finish()
            });
            if let (Some(c), Some(key)) = (&cache, key)
                && let Some(hit) = self.cache.get(key, &r.cache).and_then(c.from)
            {
                return Outcome::Ok(hit);
            }
            let args = args(r);
            let args = if r.no_payload {
                args.without_payload()
            } else {
                args
            };
            let body = match serde_json::to_vec(&args) {
                Ok(b) => b,
                Err(e) => return Outcome::Error(format!("cannot encode the request: {e}")),
            };
            let reply = match self.call(r, body).await {
                Ok(reply) => reply,
                Err(e) => return Outcome::Error(e),
            };
            let changes = if h.group == Group::TopLevelTopics {
                "topics"
            } else {
                "modifiers"
            };
            match response::verdict(&reply.body, changes) {
                response::Verdict::Next => continue,
                response::Verdict::Error(why) => {
                    self.failed(r, &why);
                    return Outcome::Error(why);
                }
                response::Verdict::Ok(changes) => match parse(r, changes) {
                    Ok(t) => {
                        if let (Some(c), Some(key), Some(age)) = (&cache, key, reply.max_age) {
                            self.cache.put(key, (c.to)(&t), age, &r.cache);
                        }
                        return Outcome::Ok(t);
                    }
                    Err(why) => {
                        self.failed(r, &why);
                        return Outcome::Error(why);
                    }
                },
            }
        }
        Outcome::Next
    }
}

fn cached_register(m: &Option<RegisterModifiers>) -> Cached {
    Cached::Register(m.clone())
}

fn from_register(c: Cached) -> Option<Option<RegisterModifiers>> {
    match c {
        Cached::Register(m) => Some(m),
        _ => None,
    }
}

fn cached_publish(m: &Option<PublishModifiers>) -> Cached {
    // A hit does not rewrite the payload (VerneMQ removes it before storing).
    Cached::Publish(m.clone().map(|m| PublishModifiers { payload: None, ..m }))
}

fn from_publish(c: Cached) -> Option<Option<PublishModifiers>> {
    match c {
        Cached::Publish(m) => Some(m),
        _ => None,
    }
}

#[allow(clippy::ptr_arg)] // The cache's signature: `fn(&T)` with T = Vec<_>.
fn cached_subscribe(v: &Vec<TopicVerdict>) -> Cached {
    Cached::Subscribe(v.clone())
}

fn from_subscribe(c: Cached) -> Option<Vec<TopicVerdict>> {
    match c {
        Cached::Subscribe(v) => Some(v),
        _ => None,
    }
}

/// The fields of a publish that make its cache key (VerneMQ's: the request without payload).
fn publish_key(k: &mut Key, client: &ClientInfo, message: &MessageInfo<'_>, v5: bool) {
    k.add(client.username.as_deref())
        .add(&client.mountpoint)
        .add(&*client.client_id)
        .add(message.qos as u8)
        .add(message.topic)
        .add(message.retain);
    key_properties(k, v5, message.properties);
}

fn result<M>(o: Outcome<Option<M>>) -> AuthResult<M> {
    match o {
        Outcome::Ok(None) => AuthResult::Ok(None),
        Outcome::Ok(Some(m)) => AuthResult::OkWith(m, None),
        Outcome::Next => AuthResult::Next,
        Outcome::Error(why) => AuthResult::Error(Some(why)),
    }
}

impl Plugin for Webhooks {
    fn name(&self) -> &str {
        NAME
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn wants(&self, hook: Hook) -> bool {
        HookSet(self.wanted.load(Relaxed)).contains(hook)
    }

    fn modifies(&self, hook: Hook) -> bool {
        matches!(hook, Hook::OnDeliver | Hook::OnUnsubscribe) && self.wants(hook)
    }

    fn auth_on_register<'a>(
        &'a self,
        req: &'a RegisterRequest<'a>,
    ) -> BoxFuture<'a, AuthResult<RegisterModifiers>> {
        Box::pin(async move {
            let v5 = req.client.protocol.is_v5();
            let c = req.client;
            let fill = |k: &mut Key| {
                k.add(c.peer.ip())
                    .add(&c.mountpoint)
                    .add(&*c.client_id)
                    .add(c.username.as_deref())
                    .add(req.password.map(|p| &p[..]))
                    .add(req.clean_start);
                key_properties(k, v5, req.properties);
            };
            let o = self
                .chain(
                    Hook::AuthOnRegister,
                    v5,
                    |r| HookArgs::auth_on_register(req, r.encoding()),
                    |_, m| m.map(|m| modifiers::register(m, v5)).transpose(),
                    Some(Caching {
                        fill: &fill,
                        to: cached_register,
                        from: from_register,
                    }),
                )
                .await;
            result(o)
        })
    }

    /// A cached answer of the first `auth_on_publish` webhook, at once; no webhook for the
    /// hook: nothing to say.
    fn auth_on_publish_now(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        let v5 = client.protocol.is_v5();
        let regs = self.snapshot();
        let Some(r) = regs
            .iter()
            .find(|r| HOOKS[r.hook].is(Hook::AuthOnPublish, Some(v5)))
        else {
            return Some(AuthResult::Next);
        };
        let mut k = Key::new(&r.endpoint.url, r.hook);
        publish_key(&mut k, client, message, v5);
        let hit = self
            .cache
            .hit(k.finish(), &r.cache)
            .and_then(from_publish)?;
        Some(result(Outcome::Ok(hit)))
    }

    fn auth_on_publish<'a>(
        &'a self,
        client: &'a ClientInfo,
        message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        Box::pin(async move {
            let v5 = client.protocol.is_v5();
            let fill = |k: &mut Key| publish_key(k, client, message, v5);
            let o = self
                .chain(
                    Hook::AuthOnPublish,
                    v5,
                    |r| HookArgs::publish(client, message, r.encoding()),
                    |r, m| m.map(|m| modifiers::publish(m, v5, r.base64)).transpose(),
                    Some(Caching {
                        fill: &fill,
                        to: cached_publish,
                        from: from_publish,
                    }),
                )
                .await;
            result(o)
        })
    }

    fn auth_on_subscribe<'a>(
        &'a self,
        client: &'a ClientInfo,
        topics: &'a [SubscribeTopic],
        properties: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<TopicVerdict>>> {
        Box::pin(async move {
            let v5 = client.protocol.is_v5();
            let fill = |k: &mut Key| {
                k.add(client.username.as_deref())
                    .add(&client.mountpoint)
                    .add(&*client.client_id)
                    .add(topics.len());
                for t in topics {
                    let o = &t.options;
                    k.add(&t.filter).add(o.qos as u8);
                    if v5 {
                        k.add(o.no_local)
                            .add(o.retain_as_published)
                            .add(o.retain_handling);
                    }
                }
                key_properties(k, v5, properties);
            };
            let o = self
                .chain(
                    Hook::AuthOnSubscribe,
                    v5,
                    |r| {
                        let asked = topics
                            .iter()
                            .map(|t| TopicArgs::new(&t.filter, &t.options, v5))
                            .collect();
                        HookArgs::subscribe(client, asked, properties, r.encoding())
                    },
                    |_, m| match m {
                        None => Ok(modifiers::allow_all(topics)),
                        Some(m) => modifiers::subscribe(m, v5, topics),
                    },
                    Some(Caching {
                        fill: &fill,
                        to: cached_subscribe,
                        from: from_subscribe,
                    }),
                )
                .await;
            match o {
                Outcome::Ok(v) => AuthResult::OkWith(v, None),
                Outcome::Next => AuthResult::Next,
                Outcome::Error(why) => AuthResult::Error(Some(why)),
            }
        })
    }

    fn on_deliver<'a>(
        &'a self,
        client: &'a ClientInfo,
        message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<DeliverModifiers>> {
        Box::pin(async move {
            let v5 = client.protocol.is_v5();
            let o = self
                .chain(
                    Hook::OnDeliver,
                    v5,
                    |r| HookArgs::deliver(client, message, r.encoding()),
                    |r, m| m.map(|m| modifiers::deliver(m, v5, r.base64)).transpose(),
                    None,
                )
                .await;
            result(o)
        })
    }

    fn on_unsubscribe<'a>(
        &'a self,
        client: &'a ClientInfo,
        topics: &'a [String],
        properties: &'a Properties,
    ) -> BoxFuture<'a, AuthResult<Vec<String>>> {
        Box::pin(async move {
            let v5 = client.protocol.is_v5();
            let o = self
                .chain(
                    Hook::OnUnsubscribe,
                    v5,
                    |r| HookArgs::unsubscribe(client, topics, properties, r.encoding()),
                    |_, m| match m {
                        None => Ok(None),
                        Some(m) => modifiers::unsubscribe(m, v5),
                    },
                    None,
                )
                .await;
            result(o)
        })
    }

    fn notify(&self, event: &Notification<'_>) {
        // Verdict hooks (on_deliver, on_unsubscribe) are asked through their chains.
        let Some((v5, client_id)) = hook_names::subject(event) else {
            return;
        };
        if let Notification::Subscribe { topics, .. } = event
            && !topics.iter().any(|t| t.granted())
        {
            return;
        }
        let regs = self.snapshot();
        let hook = event.hook();
        for r in regs.iter() {
            let h = &HOOKS[r.hook];
            if h.group != Group::Notification || !h.is(hook, v5) {
                continue;
            }
            let Some(args) = HookArgs::notification(event, r.encoding()) else {
                continue;
            };
            let Ok(body) = serde_json::to_vec(&args) else {
                continue;
            };
            let job = Job {
                hook: r.hook,
                body: body.into(),
                timeout: r.timeout,
            };
            r.endpoint.enqueue(client_id, job, &self.shared.metrics);
        }
    }
}
