//! The management API: each `vmq-admin` command is a path of command words under `/api/v1/`,
//! its `key=value` arguments are query parameters (`vmq-admin events enable hook=on_publish` is
//! `GET /api/v1/events/enable?hook=on_publish`), and the answer is VerneMQ's JSON:
//! `{"table":[{...}],"type":"table"}` or `{"text":"...","type":"text"}`.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::broker::Broker;
use crate::config::parse_duration;
use crate::hooks::Hook;
use crate::mqtt::reason;

/// The commands, for usage messages.
pub const USAGE: &str = "\
Commands (arguments as key=value, session show columns and filters as --column[=value]):
  api-key create [expires=<duration>] | api-key show | api-key delete key=<key or id>
  events show | events enable hook=<hook> | events disable hook=<hook>
  events sampling show | events sampling enable hook=<hook> acl_name=<name> percentage=<0-100>
  events sampling disable hook=<hook> acl_name=<name>
  session show [--<column>...] [--<column>=<value>...] [--limit=<n>]
  session disconnect client-id=<id> [mountpoint=<mp>]
  retain show [--topic=<topic>] [--limit=<n>]
  listener show | listener stop|start|restart name=<name>  (restart reloads certificates)
  plugin show | metrics show
  set <key>=<value>... | show <key>
  trace client client-id=<id> [mountpoint=<mp>]";

/// A command's answer.
#[derive(Debug)]
pub enum Answer {
    /// Rows of named columns.
    Table(Vec<Map<String, Value>>),
    /// A message.
    Text(String),
}

impl Answer {
    /// VerneMQ's JSON shape.
    pub fn to_json(&self) -> Value {
        match self {
            Answer::Table(rows) => json!({"table": rows, "type": "table"}),
            Answer::Text(t) => json!({"text": t, "type": "text"}),
        }
    }
}

/// Why a command failed: a bad request (400) or an unknown command (404), with a message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What is wrong.
    pub text: String,
}

impl ApiError {
    fn bad(text: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            text: text.into(),
        }
    }

    fn not_found(text: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            text: text.into(),
        }
    }
}

/// A command's arguments; every one must be used, so a misspelt one is an error.
pub struct Args {
    params: Vec<(String, String)>,
}

impl Args {
    /// The query's parameters, in order.
    pub fn new(params: Vec<(String, String)>) -> Args {
        Args { params }
    }

    fn check(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (k, _) in &self.params {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad(format!(
                    "unknown argument {k:?} (expected: {})",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad(format!("missing argument {key}=<value>")))
    }
}

fn row(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn text(t: impl Into<String>) -> Result<Answer, ApiError> {
    Ok(Answer::Text(t.into()))
}

/// Runs one command.
pub async fn run(broker: &Arc<Broker>, words: &[&str], args: Args) -> Result<Answer, ApiError> {
    match words {
        ["api-key", "create"] => {
            args.check(&["expires"])?;
            let ttl = match args.get("expires") {
                Some(v) => parse_duration(v).map_err(ApiError::bad)?,
                None => None,
            };
            let key = broker
                .api_keys
                .create(ttl)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            text(key)
        }
        ["api-key", "show"] => {
            args.check(&[])?;
            let keys = broker
                .api_keys
                .list()
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok(Answer::Table(
                keys.iter()
                    .map(|k| {
                        row([
                            ("id", json!(k.id())),
                            ("created", json!(k.created)),
                            (
                                "expires",
                                json!(k.expires.map_or("never".into(), |e| e.to_string())),
                            ),
                        ])
                    })
                    .collect(),
            ))
        }
        ["api-key", "delete"] => {
            args.check(&["key"])?;
            broker
                .api_keys
                .delete(args.need("key")?)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            text("Done")
        }
        ["events", rest @ ..] => events(broker, rest, &args),
        ["session", "show"] => session_show(broker, &args),
        ["session", "disconnect"] => {
            args.check(&["client-id", "mountpoint"])?;
            let client_id = args.need("client-id")?;
            let mountpoint = args.get("mountpoint").unwrap_or("");
            if broker
                .registry
                .disconnect(mountpoint, client_id, reason::ADMINISTRATIVE_ACTION)
                .await
            {
                text(format!("Disconnected {client_id}"))
            } else {
                Err(ApiError::not_found(format!(
                    "no connected client {client_id:?} in mountpoint {mountpoint:?}"
                )))
            }
        }
        ["retain", "show"] => {
            args.check(&["--topic", "--limit"])?;
            let limit = limit(&args)?;
            let topic = args.get("--topic").filter(|t| !t.is_empty());
            let rows = broker
                .router
                .retained_all()
                .into_iter()
                .filter(|(_, m)| topic.is_none_or(|t| *m.topic == *t))
                .take(limit)
                .map(|(mp, m)| {
                    row([
                        ("topic", json!(&*m.topic)),
                        ("payload", json!(String::from_utf8_lossy(&m.payload))),
                        ("mountpoint", json!(mp)),
                        ("qos", json!(m.qos as u8)),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["listener", "show"] => {
            args.check(&[])?;
            let rows = listeners(broker)
                .iter()
                .map(|l| {
                    row([
                        ("type", json!(l.kind)),
                        ("name", json!(l.name)),
                        ("address", json!(l.addr.to_string())),
                        ("mountpoint", json!(l.mountpoint)),
                        (
                            "status",
                            json!(if l.is_accepting() {
                                "running"
                            } else {
                                "stopped"
                            }),
                        ),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["listener", "restart"] => {
            args.check(&["name"])?;
            let name = args.need("name")?;
            let all = listeners(broker);
            let matching: Vec<_> = all
                .iter()
                .filter(|l| l.kind != "http" && l.name == name)
                .collect();
            if matching.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no MQTT listener named {name:?}"
                )));
            }
            for l in matching {
                l.reload_tls().map_err(|e| {
                    ApiError::bad(format!("{e} (the listener keeps its certificates)"))
                })?;
                l.stop();
                l.start();
            }
            text("Done")
        }
        ["listener", verb @ ("stop" | "start")] => {
            args.check(&["name"])?;
            let name = args.need("name")?;
            let all = listeners(broker);
            let l = all
                .iter()
                .filter(|l| l.kind != "http" && l.name == name)
                .collect::<Vec<_>>();
            if l.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no MQTT listener named {name:?}"
                )));
            }
            for l in l {
                if *verb == "stop" {
                    l.stop();
                } else {
                    l.start();
                }
            }
            text("Done")
        }
        ["plugin", "show"] => {
            args.check(&[])?;
            let rows = broker
                .hooks()
                .plugins()
                .iter()
                .map(|p| {
                    let hooks: Vec<&str> = Hook::ALL
                        .iter()
                        .filter(|h| p.wants(**h))
                        .map(|h| h.name())
                        .collect();
                    row([
                        ("plugin", json!(p.name())),
                        ("hooks", json!(hooks.join(","))),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["metrics", "show"] => {
            args.check(&[])?;
            let rows = broker
                .metrics
                .snapshot()
                .into_iter()
                .map(|(name, value)| row([("metric", json!(name)), ("value", json!(value))]))
                .collect();
            Ok(Answer::Table(rows))
        }
        ["set"] => {
            if args.params.is_empty() {
                return Err(ApiError::bad("usage: set <key>=<value>..."));
            }
            for (k, v) in &args.params {
                broker
                    .settings
                    .set(k, v)
                    .map_err(|e| ApiError::bad(format!("{k}: {e}")))?;
                tracing::info!(key = %k, value = %v, "setting changed at run time");
            }
            text("Done")
        }
        ["show", key] => {
            args.check(&[])?;
            let value = broker.settings.show(key).map_err(ApiError::bad)?;
            Ok(Answer::Table(vec![row([
                ("key", json!(key)),
                ("value", json!(value)),
            ])]))
        }
        _ => Err(ApiError::not_found(format!(
            "unknown command {:?}\n{USAGE}",
            words.join(" ")
        ))),
    }
}

fn listeners(broker: &Broker) -> Vec<Arc<crate::listener::ListenerHandle>> {
    broker
        .listeners
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default()
}

fn limit(args: &Args) -> Result<usize, ApiError> {
    match args.get("--limit") {
        None => Ok(usize::MAX),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("--limit expects a number, got {v:?}"))),
    }
}

fn events(broker: &Broker, words: &[&str], args: &Args) -> Result<Answer, ApiError> {
    let relay = broker.plugins.events_sidecar.as_ref().ok_or_else(|| {
        ApiError::bad("the events sidecar plugin is off (plugins.vmq_events_sidecar = on)")
    })?;
    let err = |e: crate::plugins::events_sidecar::EventsError| ApiError::bad(e.to_string());
    match words {
        ["show"] => {
            args.check(&[])?;
            let enabled = relay.enabled_hooks();
            let m = relay.metrics();
            let rows = crate::plugins::events_sidecar::config::RELAYABLE
                .iter()
                .map(|h| {
                    row([
                        ("hook", json!(h.name())),
                        ("enabled", json!(enabled.contains(h))),
                        ("sent", json!(m.sent_count(*h))),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["enable"] => {
            args.check(&["hook"])?;
            relay.enable(args.need("hook")?).map_err(err)?;
            text("Done")
        }
        ["disable"] => {
            args.check(&["hook"])?;
            relay.disable(args.need("hook")?).map_err(err)?;
            text("Done")
        }
        ["sampling", "show"] => {
            args.check(&[])?;
            let rows = relay
                .sampling_rules()
                .into_iter()
                .map(|(h, acl, pct)| {
                    row([
                        ("hook", json!(h.name())),
                        ("acl_name", json!(acl)),
                        ("percentage", json!(pct)),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["sampling", "enable"] => {
            args.check(&["hook", "acl_name", "percentage"])?;
            let pct: u8 = args
                .need("percentage")?
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| ApiError::bad("percentage must be 0 to 100"))?;
            relay
                .set_sampling(args.need("hook")?, args.need("acl_name")?, u32::from(pct))
                .map_err(err)?;
            text("Done")
        }
        ["sampling", "disable"] => {
            args.check(&["hook", "acl_name"])?;
            let removed = relay
                .clear_sampling(args.need("hook")?, args.need("acl_name")?)
                .map_err(err)?;
            if removed {
                text("Done")
            } else {
                Err(ApiError::not_found("no such sampling rule"))
            }
        }
        _ => Err(ApiError::not_found(format!(
            "unknown command \"events {}\"\n{USAGE}",
            words.join(" ")
        ))),
    }
}

/// The columns of `session show`, and the ones shown when none is asked for (VerneMQ's).
const SESSION_COLUMNS: [&str; 9] = [
    "client_id",
    "mountpoint",
    "is_online",
    "peer_host",
    "peer_port",
    "user",
    "protocol",
    "session_id",
    "offline_messages",
];
const SESSION_DEFAULT: [&str; 6] = [
    "client_id",
    "is_online",
    "mountpoint",
    "peer_host",
    "peer_port",
    "user",
];

fn session_show(broker: &Broker, args: &Args) -> Result<Answer, ApiError> {
    let mut columns = BTreeSet::new();
    let mut filters = Vec::new();
    for (k, v) in &args.params {
        if k == "--limit" {
            continue;
        }
        let Some(col) = k.strip_prefix("--").filter(|c| SESSION_COLUMNS.contains(c)) else {
            return Err(ApiError::bad(format!(
                "unknown argument {k:?} (columns: --{})",
                SESSION_COLUMNS.join(", --")
            )));
        };
        if v.is_empty() {
            columns.insert(col);
        } else {
            filters.push((col, v.as_str()));
        }
    }
    let shown: Vec<&str> = if columns.is_empty() {
        SESSION_DEFAULT.to_vec()
    } else {
        SESSION_COLUMNS
            .iter()
            .copied()
            .filter(|c| columns.contains(c))
            .collect()
    };
    let limit = limit(args)?;
    let mut rows = Vec::new();
    for s in broker.registry.sessions() {
        let info = s.info.lock().ok().and_then(|i| i.clone());
        let value = |col: &str| -> Value {
            match col {
                "client_id" => json!(&*s.client_id),
                "mountpoint" => json!(s.mountpoint),
                "is_online" => json!(s.mailbox.is_online()),
                "peer_host" => json!(info.as_ref().map(|i| i.peer.ip().to_string())),
                "peer_port" => json!(info.as_ref().map(|i| i.peer.port())),
                "user" => json!(info.as_ref().and_then(|i| i.username.clone())),
                "protocol" => json!(info.as_ref().map(|i| i.protocol.level())),
                "session_id" => json!(&*s.mailbox.session_id()),
                "offline_messages" => json!(s.mailbox.len()),
                _ => Value::Null,
            }
        };
        let matches = filters.iter().all(|(col, want)| match value(col) {
            Value::String(v) => v == *want,
            Value::Null => *want == "undefined",
            other => serde_json::from_str::<Value>(want).is_ok_and(|w| w == other),
        });
        if matches {
            rows.push(shown.iter().map(|c| ((*c).to_owned(), value(c))).collect());
            if rows.len() >= limit {
                break;
            }
        }
    }
    Ok(Answer::Table(rows))
}
