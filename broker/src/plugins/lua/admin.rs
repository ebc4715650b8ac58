//! The plugin as the host runs it: `vmq-admin script ...` (VerneMQ's commands and messages,
//! with the reason when a script does not load), its metrics and status.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::{Value, json};
use tracing::warn;

use super::{LuaPlugin, NAME, USAGE, script};
use crate::hooks::Plugin;
use crate::plugins::command::{Answer, Args, CommandError, row, text};
use crate::plugins::hook_names::HOOKS;
use crate::plugins::{Hosted, MetricsOut};

impl LuaPlugin {
    fn show(&self) -> Answer {
        let rows = self
            .snapshot()
            .iter()
            .map(|s| {
                let mut r = row([
                    ("script", json!(s.path.display().to_string())),
                    ("states", json!(s.states)),
                ]);
                for (hook, us) in s.take_averages() {
                    r.insert(hook.to_owned(), json!(us));
                }
                r
            })
            .collect();
        Answer::Table(rows)
    }
}

impl Hosted for LuaPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(self: Arc<Self>) -> Arc<dyn Plugin> {
        self
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }

    fn start(&self, broker: crate::engine::BrokerHandle) {
        let _ = self.setup.shared.broker.set(broker);
    }

    fn commands(&self) -> (&'static [&'static str], &'static str) {
        (&["script"], USAGE)
    }

    fn command(&self, words: &[&str], args: &Args) -> Result<Answer, CommandError> {
        let path = || -> Result<PathBuf, CommandError> { Ok(PathBuf::from(args.need("path")?)) };
        match words {
            ["script", "show"] => {
                args.check(&[])?;
                Ok(self.show())
            }
            ["script", "load"] => {
                args.check(&["path"])?;
                let p = path()?;
                if !p.is_file() {
                    return Err(CommandError::bad(format!("no such file: {}", p.display())));
                }
                self.load(&p).map_err(|e| {
                    warn!("can't load script {}: {e}", p.display());
                    CommandError::bad(format!("Can't load script! {e}"))
                })?;
                text("Script successfully loaded!")
            }
            ["script", "reload"] => {
                args.check(&["path"])?;
                let p = path()?;
                self.reload(&p).map_err(|e| {
                    warn!(
                        "can't reload script {} due to {e}, keeping old version",
                        p.display()
                    );
                    CommandError::bad(format!(
                        "Can't reload script! {e} (the old version runs on)"
                    ))
                })?;
                text("Script successfully reloaded!")
            }
            ["script", "unload"] => {
                args.check(&["path"])?;
                let p = path()?;
                self.unload(&p)
                    .map_err(|e| CommandError::not_found(format!("Can't unload script! {e}")))?;
                text("Script successfully unloaded!")
            }
            _ => Err(CommandError::not_found(format!(
                "unknown command {:?}\n{USAGE}",
                words.join(" ")
            ))),
        }
    }

    fn metrics(&self, out: &mut dyn MetricsOut) {
        let scripts = self.snapshot();
        type Pick = fn(&script::HookStats) -> u64;
        let families: [(&str, &str, &str, Pick); 4] = [
            (
                "lua_hook_calls",
                "counter",
                "Lua hook calls, by script and hook.",
                |s| s.calls.load(Relaxed),
            ),
            (
                "lua_hook_errors",
                "counter",
                "Lua hook calls that raised an error.",
                |s| s.errors.load(Relaxed),
            ),
            (
                "lua_hook_timeouts",
                "counter",
                "Lua hook calls stopped by hook_timeout.",
                |s| s.timeouts.load(Relaxed),
            ),
            (
                "lua_hook_microseconds",
                "counter",
                "Time spent in Lua hook calls.",
                |s| s.micros.load(Relaxed),
            ),
        ];
        for (name, kind, help, pick) in families {
            out.header(name, kind, help);
            for s in scripts.iter() {
                let path = s.path.display().to_string();
                for &i in &s.hooks {
                    out.sample(
                        name,
                        &[("script", &path), ("hook", HOOKS[i].name)],
                        pick(s.stats(i)),
                    );
                }
            }
        }
        out.header(
            "lua_notifications_dropped",
            "counter",
            "Lua notification hook calls dropped: too many waiting for the script's states.",
        );
        for s in scripts.iter() {
            out.sample(
                "lua_notifications_dropped",
                &[("script", &s.path.display().to_string())],
                s.dropped.load(Relaxed),
            );
        }
    }

    fn status(&self) -> Value {
        let scripts: Vec<String> = self
            .snapshot()
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        json!({ "scripts": scripts })
    }
}
