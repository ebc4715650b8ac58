//! The plugin as the host runs it: `vmq-admin webhooks ...` (VerneMQ's commands, columns and
//! messages), its metrics, status and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::cache::{Cache, CacheStats};
use super::config::{WebhookSpec, parse_endpoint, parse_hook, parse_ms};
use super::endpoint::Endpoint;
use super::{NAME, USAGE, Webhooks};
use crate::hooks::Plugin;
use crate::plugins::command::{Answer, Args, CommandError, row, text};
use crate::plugins::hook_names::HOOKS;
use crate::plugins::{Hosted, MetricsOut};

impl Webhooks {
    /// Notification webhooks waiting to be posted, over every endpoint.
    pub fn queued(&self) -> usize {
        let regs = self.registrations.read().clone();
        let mut seen: Vec<&str> = Vec::new();
        regs.iter()
            .filter(|r| {
                let new = !seen.contains(&r.endpoint.url.as_str());
                seen.push(&r.endpoint.url);
                new
            })
            .map(|r| r.endpoint.depth())
            .sum()
    }

    fn show(&self) -> Answer {
        let regs = self.registrations.read().clone();
        Answer::Table(
            regs.iter()
                .map(|r| {
                    row([
                        ("hook", json!(HOOKS[r.hook].name)),
                        ("endpoint", json!(r.endpoint.url)),
                        ("base64payload", json!(r.base64)),
                        ("response_timeout", json!(r.timeout.as_millis() as u64)),
                    ])
                })
                .collect(),
        )
    }

    fn cache_show(&self) -> Answer {
        let stats = self.cache_stats.lock();
        let mut rows = Vec::new();
        for (endpoint, hook, s) in stats.iter() {
            for (stat, v) in [
                ("hits", s.hits.load(Relaxed)),
                ("misses", s.misses.load(Relaxed)),
                ("entries", s.entries.load(Relaxed)),
            ] {
                rows.push(row([
                    ("stat", json!(stat)),
                    ("endpoint", json!(endpoint)),
                    ("hook", json!(HOOKS[*hook].name)),
                    ("value", json!(v)),
                ]));
            }
        }
        Answer::Table(rows)
    }

    fn all_cache_stats(&self) -> Vec<Arc<CacheStats>> {
        self.cache_stats
            .lock()
            .iter()
            .map(|(_, _, s)| s.clone())
            .collect()
    }
}

/// A `true|false` flag of `vmq-admin webhooks register` (`--flag` alone is true).
fn flag(args: &Args, name: &str, default: bool) -> Result<bool, CommandError> {
    match args.get(name) {
        None => Ok(default),
        Some("" | "true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(CommandError::bad(format!(
            "{name} must be true or false, got {v:?}"
        ))),
    }
}

impl Hosted for Webhooks {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(self: Arc<Self>) -> Arc<dyn Plugin> {
        self
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }

    fn commands(&self) -> (&'static [&'static str], &'static str) {
        (&["webhooks"], USAGE)
    }

    fn command(&self, words: &[&str], args: &Args) -> Result<Answer, CommandError> {
        match words {
            ["webhooks", "show"] => {
                args.check(&[])?;
                Ok(self.show())
            }
            ["webhooks", "register"] => {
                args.check(&[
                    "hook",
                    "endpoint",
                    "--base64payload",
                    "--no_payload",
                    "--response_timeout",
                ])?;
                let hook = parse_hook(args.need("hook")?).map_err(CommandError::bad)?;
                let endpoint = parse_endpoint(args.need("endpoint")?).map_err(CommandError::bad)?;
                let response_timeout = match args.get("--response_timeout") {
                    Some(v) => parse_ms(v).map_err(CommandError::bad)?,
                    None => Duration::from_millis(5000),
                };
                self.register(WebhookSpec {
                    hook,
                    endpoint,
                    base64: flag(args, "--base64payload", true)?,
                    no_payload: flag(args, "--no_payload", false)?,
                    response_timeout,
                })
                .map_err(|e| CommandError::bad(format!("can't register endpoint due to '{e}'")))?;
                text("Done")
            }
            ["webhooks", "deregister"] => {
                args.check(&["hook", "endpoint"])?;
                let hook = parse_hook(args.need("hook")?).map_err(CommandError::bad)?;
                self.deregister(hook, args.need("endpoint")?).map_err(|e| {
                    CommandError::not_found(format!("can't deregister endpoint due to '{e}'"))
                })?;
                text("Done")
            }
            ["webhooks", "cache", "show"] => {
                args.check(&["--reset"])?;
                if flag(args, "--reset", false)? {
                    Cache::reset_stats(&self.all_cache_stats());
                    return text("Done");
                }
                Ok(self.cache_show())
            }
            ["webhooks", "cache", "clear"] => {
                args.check(&[])?;
                self.cache.clear(&self.all_cache_stats());
                text("Done")
            }
            _ => Err(CommandError::not_found(format!(
                "unknown command {:?}\n{USAGE}",
                words.join(" ")
            ))),
        }
    }

    fn metrics(&self, out: &mut dyn MetricsOut) {
        self.shared.metrics.write(out);
        out.single(
            "webhooks_notifications_queued",
            "gauge",
            "Notification webhook calls waiting in the endpoints' queues or being sent.",
            self.queued() as u64,
        );
        let stats = self.all_cache_stats();
        let sum = |f: fn(&CacheStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
        out.single(
            "webhooks_cache_hits",
            "counter",
            "Webhook calls answered from the cache.",
            sum(|s| s.hits.load(Relaxed)),
        );
        out.single(
            "webhooks_cache_misses",
            "counter",
            "Cacheable webhook calls not found in the cache.",
            sum(|s| s.misses.load(Relaxed)),
        );
        out.single(
            "webhooks_cache_entries",
            "gauge",
            "Answers held in the webhook cache.",
            self.cache.len() as u64,
        );
        out.single(
            "webhooks_cache_full",
            "counter",
            "Cacheable answers not stored because the cache was full (cache_max_entries).",
            self.cache.full.load(Relaxed),
        );
    }

    fn status(&self) -> Value {
        json!({
            "webhooks": self.registrations.read().len(),
            "queued": self.queued(),
            "cache_entries": self.cache.len(),
        })
    }

    fn stop(&self, within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let regs = self.registrations.read().clone();
            let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
            for r in regs.iter() {
                if !endpoints.iter().any(|e| Arc::ptr_eq(e, &r.endpoint)) {
                    endpoints.push(r.endpoint.clone());
                }
            }
            futures::future::join_all(
                endpoints
                    .iter()
                    .map(|e| e.drain(within, &self.shared.metrics)),
            )
            .await;
        })
    }
}
