//! The management API: each `vmq-admin` command is a path of command words under `/api/v1/`,
//! its `key=value` arguments are query parameters (`vmq-admin events enable hook=on_publish` is
//! `GET /api/v1/events/enable?hook=on_publish`), and the answer is VerneMQ's JSON:
//! `{"table":[{...}],"type":"table"}` or `{"text":"...","type":"text"}`.

use serde_json::{Value, json};
use std::collections::BTreeSet;

use super::Node;
use crate::config::parse_duration;
use crate::engine::Engine;
use crate::hooks::Hook;
use crate::mqtt::DisconnectReason;

/// The commands, for usage messages.
pub const USAGE: &str = "\
Commands (arguments as key=value, session show columns and filters as --column[=value]):
  api-key create [expires=<duration>] | api-key show | api-key delete key=<key or id>
  session show [--<column>...] [--<column>=<value>...] [--limit=<n>]
  session disconnect client-id=<id> [mountpoint=<mp>]
  retain show [--topic=<topic>] [--limit=<n>]
  listener show | listener stop|start|restart name=<name>  (restart reloads certificates)
  plugin show | metrics show
  set <key>=<value>... | show <key>
  trace client client-id=<id> [mountpoint=<mp>]";

/// Every command: the broker's and the shipped plugins'.
pub fn usage() -> String {
    format!("{USAGE}\n{}", crate::plugins::usage())
}

pub use crate::plugins::command::{Answer, Args, CommandError as ApiError};
use crate::plugins::command::{row, text};

/// Runs one command.
pub async fn run(node: &Node, words: &[&str], args: Args) -> Result<Answer, ApiError> {
    if let Some(answer) = node.plugins.command(words, &args) {
        return answer;
    }
    if let Some(cluster) = &node.cluster
        && let Some(answer) = cluster.command(words, &args).await
    {
        return answer;
    }
    let engine = &node.engine;
    match words {
        ["api-key", "create"] => {
            args.check(&["expires"])?;
            let ttl = match args.get("expires") {
                Some(v) => parse_duration(v).map_err(ApiError::bad)?,
                None => None,
            };
            let key = node
                .api_keys
                .create(ttl)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            text(key)
        }
        ["api-key", "show"] => {
            args.check(&[])?;
            let keys = node
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
            node.api_keys
                .delete(args.need("key")?)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            text("Done")
        }
        ["events", ..] => Err(ApiError::bad(
            "the events sidecar plugin is off (plugins.vmq_events_sidecar = on)",
        )),
        ["session", "show"] => session_show(engine, &args),
        ["session", "disconnect"] => {
            args.check(&["client-id", "mountpoint"])?;
            let client_id = args.need("client-id")?;
            let mountpoint = args.get("mountpoint").unwrap_or("");
            if engine
                .disconnect(
                    mountpoint,
                    client_id,
                    DisconnectReason::AdministrativeAction,
                )
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
            let rows = engine
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
            let rows = node
                .listeners
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
            let all = &node.listeners;
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
            let all = &node.listeners;
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
            let rows = engine
                .hooks()
                .plugins()
                .iter()
                .map(|p| {
                    let hooks: Vec<&str> = Hook::ALL
                        .iter()
                        .filter(|h| p.wants(**h))
                        .map(|h| h.name())
                        .collect();
                    let status = node.plugins.get(p.name()).map(|h| h.status());
                    row([
                        ("plugin", json!(p.name())),
                        ("hooks", json!(hooks.join(","))),
                        ("status", status.unwrap_or_default()),
                    ])
                })
                .collect();
            Ok(Answer::Table(rows))
        }
        ["metrics", "show"] => {
            args.check(&[])?;
            let rows = engine
                .metrics()
                .snapshot()
                .into_iter()
                .map(|(name, value)| row([("metric", json!(name)), ("value", json!(value))]))
                .collect();
            Ok(Answer::Table(rows))
        }
        ["set"] => {
            if args.params().is_empty() {
                return Err(ApiError::bad("usage: set <key>=<value>..."));
            }
            for (k, v) in args.params() {
                engine
                    .settings()
                    .set(k, v)
                    .map_err(|e| ApiError::bad(format!("{k}: {e}")))?;
                tracing::info!(key = %k, value = %v, "setting changed at run time");
            }
            text("Done")
        }
        ["show", key] => {
            args.check(&[])?;
            let value = engine.settings().show(key).map_err(ApiError::bad)?;
            Ok(Answer::Table(vec![row([
                ("key", json!(key)),
                ("value", json!(value)),
            ])]))
        }
        _ => Err(ApiError::not_found(format!(
            "unknown command {:?}\n{}",
            words.join(" "),
            usage()
        ))),
    }
}

fn limit(args: &Args) -> Result<usize, ApiError> {
    match args.get("--limit") {
        None => Ok(usize::MAX),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("--limit expects a number, got {v:?}"))),
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

fn session_show(engine: &Engine, args: &Args) -> Result<Answer, ApiError> {
    let mut columns = BTreeSet::new();
    let mut filters = Vec::new();
    for (k, v) in args.params() {
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
    for s in engine.sessions() {
        let info = s.info.lock().clone();
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
