//! `vmq_diversity`: VerneMQ's Lua plugins, so its users' scripts run unchanged
//! (`specs/lua.md`): scripts with a global `hooks` table, VerneMQ's argument tables and return
//! conventions, its modules (`json`, `http`, `kv`, `log`, `bcrypt`, `crypto`, `obf`), and
//! `vmq-admin script load|reload|unload|show`.
//!
//! Each script runs in a pool of real Lua 5.4 states on their own threads (`script.rs`,
//! `vm.rs`); a session's hook call is queued and awaited, never run on a tokio worker. ACLs a
//! script puts in `auth_cache` decide a client's publishes and subscribes before any script
//! (`auth_cache.rs`). The database modules (`db/`) give scripts pooled PostgreSQL, MySQL,
//! Redis and memcached connections; VerneMQ's bundled auth scripts (`bundled.rs`) are built in.

mod admin;
mod answers;
mod args;
mod auth_cache;
mod bundled;
pub mod config;
mod data;
mod db;
mod modules;
mod script;
mod vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde_json::Value;
use tracing::{info, warn};

use super::Hosted;
use crate::config::{Config, ConfigError, PluginSetting};
use crate::hooks::{
    AuthResult, ClientInfo, DeliverModifiers, Hook, HookSet, INVALID_CREDENTIALS, MessageInfo,
    Notification, Plugin, PublishModifiers, RegisterModifiers, RegisterRequest, SubscribeTopic,
    TopicVerdict,
};
use crate::mqtt::Properties;
use crate::plugins::hook_names::{self, Group, HOOKS};
use crate::plugins::modifiers;
use answers::{Ret, modifiers_json, ret, subscribe_json};
use args::Args;
use auth_cache::Decision;
use config::LuaConfig;
use data::Data;
use script::Script;
use vm::{CallError, Setup};

/// The plugin's name.
pub const NAME: &str = "vmq_diversity";

/// The usage of its commands.
pub const USAGE: &str = "  script show
  script load path=<file>
  script reload path=<file>
  script unload path=<file>";

/// Checks the `vmq_diversity.*` lines.
pub(super) fn check_settings(s: &[PluginSetting]) -> Result<(), ConfigError> {
    LuaConfig::from_settings(s).map(drop)
}

/// Starts the plugin and loads its scripts (before the listeners accept).
pub(super) fn start_hosted(
    _config: &Config,
    s: &[PluginSetting],
    priority: i32,
) -> Result<Arc<dyn Hosted>, String> {
    let config = LuaConfig::from_settings(s).map_err(|e| e.to_string())?;
    Ok(LuaPlugin::start(config, priority)?)
}

/// The Lua plugin.
pub struct LuaPlugin {
    scripts: RwLock<Arc<Vec<Arc<Script>>>>,
    wanted: AtomicU32,
    setup: Setup,
    default_states: usize,
    priority: i32,
}

impl std::fmt::Debug for LuaPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaPlugin")
            .field("scripts", &self.scripts.read().len())
            .finish()
    }
}

/// Runs blocking work (loading a script) from async code without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl LuaPlugin {
    /// Starts the plugin (inside a tokio runtime): `script_dir`'s `*.lua` in name order, then
    /// the `<name>.file` scripts. A script that does not load is logged and skipped, as in
    /// VerneMQ.
    pub fn start(config: LuaConfig, priority: i32) -> Result<Arc<LuaPlugin>, String> {
        let setup = Setup {
            script_dir: config.script_dir.clone(),
            keep_state: config.keep_state,
            hook_timeout: config.hook_timeout,
            shared: Arc::new(modules::Shared::new(config.databases.clone())?),
        };
        let plugin = Arc::new(LuaPlugin {
            scripts: RwLock::default(),
            wanted: AtomicU32::new(0),
            setup,
            default_states: config.nr_lua_states,
            priority,
        });
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(dir) = &config.script_dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "lua") && p.is_file())
                        .collect();
                    found.sort();
                    paths.extend(found);
                }
                Err(e) => warn!(dir = %dir.display(), "vmq_diversity.script_dir: {e}"),
            }
        }
        paths.extend(config.scripts);
        // The bundled auth scripts turned on, after every other script (as VerneMQ).
        paths.extend(
            config
                .auth_scripts
                .iter()
                .map(|a| a.path.clone().unwrap_or_else(|| bundled::auth_script(a.db))),
        );
        for p in paths {
            match plugin.load(&p) {
                Ok(()) => info!(script = %p.display(), "Lua script loaded"),
                Err(e) => warn!("can't load script {}: {e}", p.display()),
            }
        }
        Ok(plugin)
    }

    /// Loads a script; an already loaded path is an error.
    pub fn load(&self, path: &Path) -> Result<(), String> {
        if self.scripts.read().iter().any(|s| s.path == path) {
            return Err("already loaded".into());
        }
        let script = blocking(|| Script::load(path, &self.setup, self.default_states))?;
        let mut scripts = self.scripts.write();
        let mut list = (**scripts).clone();
        list.push(Arc::new(script));
        self.set(&mut scripts, list);
        Ok(())
    }

    /// Loads the file again into the script's states; the old code stays if it fails.
    pub fn reload(&self, path: &Path) -> Result<(), String> {
        let script = self
            .find(path)
            .ok_or_else(|| "no such script loaded".to_owned())?;
        blocking(|| script.reload())
    }

    /// Unloads a script: it leaves every hook; its states stop after the calls queued.
    pub fn unload(&self, path: &Path) -> Result<(), String> {
        let mut scripts = self.scripts.write();
        let Some(at) = scripts.iter().position(|s| s.path == path) else {
            return Err("no such script loaded".into());
        };
        let mut list = (**scripts).clone();
        list.remove(at).unload();
        self.set(&mut scripts, list);
        Ok(())
    }

    fn find(&self, path: &Path) -> Option<Arc<Script>> {
        self.scripts.read().iter().find(|s| s.path == path).cloned()
    }

    fn set(&self, scripts: &mut Arc<Vec<Arc<Script>>>, list: Vec<Arc<Script>>) {
        let wanted = list
            .iter()
            .flat_map(|s| s.hooks.iter())
            .filter_map(|&i| HOOKS[i].hook)
            .fold(HookSet::default(), HookSet::with);
        *scripts = Arc::new(list);
        self.wanted.store(wanted.0, Relaxed);
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Script>>> {
        self.scripts.read().clone()
    }

    /// What auth_cache says about a publish; `None` when the client has no entry.
    fn cached_publish(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        let v5 = client.protocol.is_v5();
        match self.setup.shared.auth_cache.publish(
            &client.mountpoint,
            &client.client_id,
            message.topic,
            message.qos as u8,
            message.payload.len(),
            message.retain,
        ) {
            Decision::NoEntry => None,
            Decision::Refused => Some(AuthResult::Error(Some("not_authorized".into()))),
            Decision::Allowed(None) => Some(AuthResult::Ok(None)),
            Decision::Allowed(Some(m)) => Some(
                match modifiers_json(&m).and_then(|j| modifiers::publish(&j, v5, false)) {
                    Ok(m) => AuthResult::OkWith(m, None),
                    Err(e) => AuthResult::Error(Some(format!("invalid_modifiers: {e}"))),
                },
            ),
        }
    }

    /// Runs a conditional hook through the scripts that registered it, in load order:
    /// `true` or a table decides; `false` refuses; `nil` asks the next script. A raised error
    /// is logged and counted; for auth hooks the next script is asked (VerneMQ's rule), for
    /// the others the chain stops.
    async fn chain<T>(
        &self,
        hook: Hook,
        v5: bool,
        args: Data,
        read: impl Fn(Ret) -> Option<Result<T, String>>,
    ) -> Option<Result<T, String>> {
        let mut decided = self.chains(hook, v5, vec![Args::Table(args)], read).await;
        decided.pop().flatten()
    }

    /// [`LuaPlugin::chain`] for several calls of one hook (a client's publishes read
    /// together): each script is asked once about the calls still undecided, in one job.
    async fn chains<T>(
        &self,
        hook: Hook,
        v5: bool,
        mut args: Vec<Args>,
        read: impl Fn(Ret) -> Option<Result<T, String>>,
    ) -> Vec<Option<Result<T, String>>> {
        let auth = matches!(
            hook,
            Hook::AuthOnRegister | Hook::AuthOnPublish | Hook::AuthOnSubscribe
        );
        let mut decided: Vec<Option<Result<T, String>>> = args.iter().map(|_| None).collect();
        // The calls still undecided, by position.
        let mut open: Vec<usize> = (0..args.len()).collect();
        let scripts = self.snapshot();
        let mut left = scripts
            .iter()
            .filter(|s| registered(s, hook, v5).is_some())
            .count();
        for s in scripts.iter() {
            let Some(index) = registered(s, hook, v5) else {
                continue;
            };
            left -= 1;
            // The last script asked gets the arguments themselves.
            let asked = if left > 0 {
                args.clone()
            } else {
                std::mem::take(&mut args)
            };
            let answers = s.call(index, asked).await;
            let mut still = Vec::new();
            let mut still_args = Vec::new();
            for ((at, answer), a) in open.iter().copied().zip(answers).zip(
                args.drain(..)
                    .map(Some)
                    .chain(std::iter::repeat_with(|| None)),
            ) {
                let verdict = match answer {
                    Ok(d) => read(ret(d)),
                    Err(e) => {
                        let why = match e {
                            CallError::Timeout => "hook_timeout exceeded".to_owned(),
                            CallError::Raised(m) => m,
                        };
                        warn!(
                            script = %s.path.display(),
                            hook = HOOKS[index].name,
                            error = %why,
                            "can't call Lua hook"
                        );
                        (!auth).then_some(Err(why))
                    }
                };
                match verdict {
                    Some(v) => decided[at] = Some(v),
                    None => {
                        still.push(at);
                        still_args.extend(a);
                    }
                }
            }
            open = still;
            args = still_args;
            if open.is_empty() {
                break;
            }
        }
        decided
    }
}

/// What a script's answer to `auth_on_publish` decides.
fn publish_verdict(r: Ret, v5: bool) -> Option<Result<Option<PublishModifiers>, String>> {
    match r {
        Ret::Ok => Some(Ok(None)),
        Ret::Refused => Some(Err("not_authorized".to_owned())),
        Ret::Changes(d) => Some(
            modifiers_json(&d)
                .and_then(|j| modifiers::publish(&j, v5, false))
                .map(Some)
                .map_err(|e| format!("invalid_modifiers: {e}")),
        ),
        Ret::Next => None,
    }
}

/// The hook of the script that serves `hook` for a client of this protocol, if it has one.
fn registered(s: &Script, hook: Hook, v5: bool) -> Option<usize> {
    s.hooks
        .iter()
        .copied()
        .find(|&i| HOOKS[i].is(hook, Some(v5)))
}

fn result<M>(o: Option<Result<Option<M>, String>>) -> AuthResult<M> {
    match o {
        None => AuthResult::Next,
        Some(Ok(None)) => AuthResult::Ok(None),
        Some(Ok(Some(m))) => AuthResult::OkWith(m, None),
        Some(Err(why)) => AuthResult::Error(Some(why)),
    }
}

impl Plugin for LuaPlugin {
    fn name(&self) -> &str {
        NAME
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn wants(&self, hook: Hook) -> bool {
        HookSet(self.wanted.load(Relaxed)).contains(hook)
            || (!self.setup.shared.auth_cache.is_empty()
                && matches!(
                    hook,
                    Hook::AuthOnPublish
                        | Hook::AuthOnSubscribe
                        | Hook::OnClientOffline
                        | Hook::OnClientGone
                        | Hook::OnSessionExpired
                ))
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
            let o = self
                .chain(Hook::AuthOnRegister, v5, args::register(req), |r| match r {
                    Ret::Ok => Some(Ok(None)),
                    Ret::Refused => Some(Err(INVALID_CREDENTIALS.to_owned())),
                    Ret::Changes(d) => Some(
                        modifiers_json(&d)
                            .and_then(|j| modifiers::register(&j, v5))
                            .map(Some)
                            .map_err(|e| format!("invalid_modifiers: {e}")),
                    ),
                    Ret::Next => None,
                })
                .await;
            result(o)
        })
    }

    /// A client with an auth_cache entry is decided at once (no script is asked, as in
    /// VerneMQ); with no entry and no script for the hook, the plugin has nothing to say.
    fn auth_on_publish_now(
        &self,
        client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        match self.cached_publish(client, message) {
            Some(decided) => Some(decided),
            None if !HookSet(self.wanted.load(Relaxed)).contains(Hook::AuthOnPublish) => {
                Some(AuthResult::Next)
            }
            None => None,
        }
    }

    fn auth_on_publish<'a>(
        &'a self,
        client: &'a ClientInfo,
        message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        let v5 = client.protocol.is_v5();
        if let Some(decided) = self.cached_publish(client, message) {
            return Box::pin(std::future::ready(decided));
        }
        Box::pin(async move {
            let o = self
                .chain(
                    Hook::AuthOnPublish,
                    v5,
                    args::publish(client, message, v5),
                    |r| publish_verdict(r, v5),
                )
                .await;
            result(o)
        })
    }

    /// A client's publishes read together: those auth_cache decides at once, the others
    /// through the scripts, one job per script.
    fn auth_on_publish_batch<'a>(
        &'a self,
        client: &'a ClientInfo,
        messages: &'a [&'a MessageInfo<'a>],
    ) -> BoxFuture<'a, Vec<AuthResult<PublishModifiers>>> {
        let v5 = client.protocol.is_v5();
        let mut answers: Vec<Option<AuthResult<PublishModifiers>>> = messages
            .iter()
            .map(|m| self.cached_publish(client, m))
            .collect();
        Box::pin(async move {
            let open: Vec<usize> = (0..messages.len())
                .filter(|&i| answers[i].is_none())
                .collect();
            if !open.is_empty() {
                let publisher = args::Publisher::new(client);
                let args = open
                    .iter()
                    .map(|&i| Args::Publish(publisher.message(messages[i], v5)))
                    .collect();
                let decided = self
                    .chains(Hook::AuthOnPublish, v5, args, |r| publish_verdict(r, v5))
                    .await;
                for (i, d) in open.into_iter().zip(decided) {
                    answers[i] = Some(result(d));
                }
            }
            answers
                .into_iter()
                .map(|a| a.unwrap_or(AuthResult::Next))
                .collect()
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
            let asked: Vec<(&str, u8)> = topics
                .iter()
                .map(|t| (t.filter.as_str(), t.options.qos as u8))
                .collect();
            match self.setup.shared.auth_cache.subscribe(
                &client.mountpoint,
                &client.client_id,
                &asked,
            ) {
                Decision::NoEntry => {}
                Decision::Refused => return AuthResult::Error(Some("not_authorized".into())),
                Decision::Allowed(None) => {
                    return AuthResult::OkWith(modifiers::allow_all(topics), None);
                }
                Decision::Allowed(Some(m)) => {
                    return match modifiers::subscribe(&subscribe_json(&m, false), false, topics) {
                        Ok(v) => AuthResult::OkWith(v, None),
                        Err(e) => AuthResult::Error(Some(format!("invalid_modifiers: {e}"))),
                    };
                }
            }
            let a = args::subscribe(client, args::asked(topics), properties);
            let o = self
                .chain(Hook::AuthOnSubscribe, v5, a, |r| match r {
                    Ret::Ok => Some(Ok(modifiers::allow_all(topics))),
                    Ret::Refused => Some(Err("not_authorized".to_owned())),
                    Ret::Changes(d) => Some(
                        modifiers::subscribe(&subscribe_json(&d, v5), v5, topics)
                            .map_err(|e| format!("invalid_modifiers: {e}")),
                    ),
                    Ret::Next => None,
                })
                .await;
            match o {
                None => AuthResult::Next,
                Some(Ok(v)) => AuthResult::OkWith(v, None),
                Some(Err(why)) => AuthResult::Error(Some(why)),
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
                    args::publish(client, message, true),
                    |r| match r {
                        Ret::Ok => Some(Ok(None)),
                        Ret::Refused => Some(Err("not_authorized".to_owned())),
                        Ret::Changes(d) => Some(
                            modifiers_json(&d)
                                .and_then(|j| modifiers::deliver(&j, v5, false))
                                .map(Some),
                        ),
                        Ret::Next => None,
                    },
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
                    args::unsubscribe(client, topics, properties),
                    |r| match r {
                        Ret::Ok => Some(Ok(None)),
                        Ret::Refused => Some(Err("not_authorized".to_owned())),
                        Ret::Changes(d) => {
                            let j = if v5 {
                                d.to_json().unwrap_or(Value::Null)
                            } else {
                                Value::Array(d.items().iter().filter_map(|t| t.to_json()).collect())
                            };
                            Some(modifiers::unsubscribe(&j, v5))
                        }
                        Ret::Next => None,
                    },
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
        let hook = event.hook();
        match *event {
            Notification::ClientOffline { client, .. }
            | Notification::ClientGone { client, .. } => self
                .setup
                .shared
                .auth_cache
                .remove(&client.mountpoint, &client.client_id),
            Notification::SessionExpired {
                mountpoint,
                client_id,
                ..
            } => self.setup.shared.auth_cache.remove(mountpoint, client_id),
            _ => {}
        }
        let targets: Vec<(Arc<Script>, usize)> = self
            .snapshot()
            .iter()
            .filter_map(|s| {
                s.hooks
                    .iter()
                    .copied()
                    .find(|&i| HOOKS[i].group == Group::Notification && HOOKS[i].is(hook, v5))
                    .map(|i| (s.clone(), i))
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let Some(args) = args::notification(event) else {
            return;
        };
        // Notifications never make the session wait: queued to the scripts' states.
        for (s, i) in targets {
            s.notify(i, args.clone(), client_id);
        }
    }
}
