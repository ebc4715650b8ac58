//! `vmq_webhooks.*` settings, as VerneMQ's schema has them (`specs/webhooks.md` 1.2, 1.3),
//! plus the bounds of what is ours (the notification queues, the cache).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, PluginSetting, parse_duration, parse_flag};
use crate::plugins::hook_names as names;

/// One webhook: a hook name and the endpoint it posts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Index into [`names::HOOKS`].
    pub hook: usize,
    /// The URL, as given.
    pub endpoint: String,
    /// Payloads as base64 (VerneMQ's default) or raw text.
    pub base64: bool,
    /// Leave the payload out of `auth_on_publish` requests.
    pub no_payload: bool,
    /// How long to wait for the answer.
    pub response_timeout: Duration,
}

/// TLS towards `https://` endpoints.
pub type TlsSettings = crate::plugins::client_tls::ClientTls;

/// The plugin's configuration.
#[derive(Clone, Debug)]
pub struct WebhooksConfig {
    /// The webhooks of the file, in VerneMQ's registration order (name order).
    pub webhooks: Vec<WebhookSpec>,
    /// Concurrent requests per endpoint URL (and pooled connections).
    pub pool_max_connections: usize,
    /// How long an idle pooled connection is kept.
    pub pool_timeout: Duration,
    /// TLS.
    pub tls: TlsSettings,
    /// Notifications waiting per endpoint before new ones are dropped (ours).
    pub queue_size: usize,
    /// Cached answers kept at most (ours).
    pub cache_max_entries: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            webhooks: Vec::new(),
            pool_max_connections: 100,
            pool_timeout: Duration::from_secs(60),
            tls: TlsSettings {
                cafile: None,
                certfile: None,
                keyfile: None,
                system_cas: true,
                verify_peer: true,
                tls_version: Some(&rustls::version::TLS12),
            },
            queue_size: 10_000,
            cache_max_entries: 100_000,
        }
    }
}

/// Milliseconds, as VerneMQ writes them (`5000`), or a duration with a unit (`5s`).
pub fn parse_ms(v: &str) -> Result<Duration, String> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    parse_duration(v)?.ok_or_else(|| format!("expected milliseconds, got {v:?}"))
}

/// Checks an endpoint URL: `http://` or `https://` with a host.
pub fn parse_endpoint(v: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(v).map_err(|e| format!("bad endpoint URL {v:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "bad endpoint URL {v:?}: expected http://host[:port]/path or https://..."
        ));
    }
    Ok(v.to_owned())
}

/// A hook name webhooks can be registered for.
pub fn parse_hook(v: &str) -> Result<usize, String> {
    names::parse(v).ok_or_else(|| format!("unknown hook {v:?} (one of: {})", names::list()))
}

fn file(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(v);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {v}: {e}"))?;
    if !text.contains("-----BEGIN") {
        return Err(format!("{v} is not a PEM file"));
    }
    Ok(Some(path))
}

#[derive(Default)]
struct Partial<'a> {
    hook: Option<(usize, &'a PluginSetting)>,
    endpoint: Option<(String, &'a PluginSetting)>,
    base64: bool,
    no_payload: bool,
    response_timeout: Option<Duration>,
    first: Option<&'a PluginSetting>,
}

impl WebhooksConfig {
    /// Reads the `vmq_webhooks.*` lines; the first wrong one is an error with its line.
    pub fn from_settings(settings: &[PluginSetting]) -> Result<Self, ConfigError> {
        let mut c = WebhooksConfig::default();
        let mut hooks: BTreeMap<&str, Partial> = BTreeMap::new();
        for s in settings {
            let mut set = || -> Result<(), String> {
                match s.key.split_once('.') {
                    Some((name, field)) => {
                        let w = hooks.entry(name).or_insert_with(|| Partial {
                            base64: true,
                            ..Default::default()
                        });
                        w.first.get_or_insert(s);
                        match field {
                            "hook" => w.hook = Some((parse_hook(&s.value)?, s)),
                            "endpoint" => w.endpoint = Some((parse_endpoint(&s.value)?, s)),
                            "base64encode" => w.base64 = parse_flag(&s.value)?,
                            "no_payload" => w.no_payload = parse_flag(&s.value)?,
                            "response_timeout" => w.response_timeout = Some(parse_ms(&s.value)?),
                            _ => {
                                return Err(format!(
                                    "unknown webhook setting {field:?} (hook, endpoint, \
                                     base64encode, no_payload, response_timeout)"
                                ));
                            }
                        }
                        Ok(())
                    }
                    None => c.set(&s.key, &s.value),
                }
            };
            set().map_err(|e| s.error(e))?;
        }
        if let Some(s) = settings
            .iter()
            .find(|s| matches!(s.key.as_str(), "certfile" | "keyfile"))
            && c.tls.certfile.is_some() != c.tls.keyfile.is_some()
        {
            return Err(s.error("a client certificate needs both certfile and keyfile"));
        }
        for (name, w) in hooks {
            let first = w.first.expect("an entry is made by a line");
            let (Some((hook, _)), Some((endpoint, _))) = (w.hook, w.endpoint) else {
                return Err(first.error(format!(
                    "webhook {name:?} needs both vmq_webhooks.{name}.hook and \
                     vmq_webhooks.{name}.endpoint"
                )));
            };
            c.webhooks.push(WebhookSpec {
                hook,
                endpoint,
                base64: w.base64,
                no_payload: w.no_payload,
                response_timeout: w.response_timeout.unwrap_or(Duration::from_millis(5000)),
            });
        }
        Ok(c)
    }

    /// Applies one global `vmq_webhooks.<key>` setting.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("expected a number, got {v:?}"))
        };
        match key {
            "pool_max_connections" => {
                self.pool_max_connections = num(value)?;
                if !(1..=10_000).contains(&self.pool_max_connections) {
                    return Err("pool_max_connections must be between 1 and 10000".into());
                }
            }
            "pool_timeout" => self.pool_timeout = parse_ms(value)?,
            "cafile" => self.tls.cafile = file(value)?,
            "certfile" => self.tls.certfile = file(value)?,
            "keyfile" => self.tls.keyfile = file(value)?,
            "keyfile_password" if value.is_empty() => {}
            "keyfile_password" => {
                return Err(
                    "encrypted key files are not supported: decrypt the key (openssl pkey) \
                     and leave keyfile_password unset"
                        .into(),
                );
            }
            "verify_peer" => self.tls.verify_peer = parse_flag(value)?,
            "tls_version" => {
                self.tls.tls_version = match value {
                    "tlsv1.2" => Some(&rustls::version::TLS12),
                    "tlsv1.3" => Some(&rustls::version::TLS13),
                    _ => return Err(format!("expected tlsv1.2 or tlsv1.3, got {value:?}")),
                }
            }
            // Chain depth and CRL checking are rustls' own (webpki has no depth knob and
            // fetches no CRLs): accepted so VerneMQ's files load, without effect.
            "depth" => {
                num(value)?;
            }
            "use_crls" => {
                parse_flag(value)?;
            }
            "queue_size" => {
                self.queue_size = num(value)?;
                if self.queue_size == 0 {
                    return Err("queue_size must be at least 1".into());
                }
            }
            "cache_max_entries" => self.cache_max_entries = num(value)?,
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (per webhook: <name>.hook, <name>.endpoint, ...; \
                     global: pool_max_connections, pool_timeout, cafile, certfile, keyfile, \
                     verify_peer, tls_version, depth, use_crls, queue_size, cache_max_entries)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Vec<PluginSetting> {
        PluginSetting::lines(text)
    }

    #[test]
    fn webhooks_in_name_order_with_defaults() {
        let c = WebhooksConfig::from_settings(&settings(
            "webhook2.hook = on_publish\nwebhook2.endpoint = http://127.0.0.1:8080/p\n\
             webhook10.hook = auth_on_register_m5\nwebhook10.endpoint = https://h/x?a=1\n\
             webhook10.base64encode = off\nwebhook10.response_timeout = 250\n\
             pool_max_connections = 7",
        ))
        .unwrap();
        assert_eq!(c.pool_max_connections, 7);
        assert_eq!(c.webhooks.len(), 2);
        // Lexicographic, as VerneMQ's `lists:usort`: webhook10 before webhook2.
        assert_eq!(names::HOOKS[c.webhooks[0].hook].name, "auth_on_register_m5");
        assert!(!c.webhooks[0].base64);
        assert_eq!(c.webhooks[0].response_timeout, Duration::from_millis(250));
        assert_eq!(c.webhooks[1].endpoint, "http://127.0.0.1:8080/p");
        assert!(c.webhooks[1].base64);
        assert_eq!(c.webhooks[1].response_timeout, Duration::from_millis(5000));
    }

    #[test]
    fn bad_lines_say_which_and_why() {
        let e = |t: &str| {
            WebhooksConfig::from_settings(&settings(t))
                .unwrap_err()
                .to_string()
        };
        assert!(e("w.hook = on_nothing").contains("unknown hook \"on_nothing\""));
        assert!(e("w.endpoint = ftp://x/").contains("bad endpoint URL"));
        assert!(e("w.hook = on_publish").contains("needs both"));
        assert!(e("w.hook = on_publish\nw.colour = red").contains("f:2"));
        assert!(e("tls_version = tlsv1").contains("tlsv1.2 or tlsv1.3"));
        assert!(e("cafile = /nonexistent.pem").contains("cannot read"));
        assert!(e("keyfile_password = x").contains("not supported"));
    }
}
