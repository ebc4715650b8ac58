//! `/status.json` (what a dashboard or a script reads) and `/status` (the same for a human: one
//! self-contained HTML page, no external assets, refreshing itself from `/status.json`).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Node;
use crate::metrics::Metrics;

/// The node's state as JSON.
pub fn snapshot(node: &Node) -> Value {
    let engine = &node.engine;
    let m = &engine.metrics();
    let (received, sent) = node.rates.get();
    let online = engine.online_count();
    let sessions = engine.session_count();
    let listeners: Vec<Value> = node
        .listeners
        .iter()
        .map(|l| {
            json!({
                "type": l.kind,
                "name": l.name,
                "address": l.addr.to_string(),
                "mountpoint": l.mountpoint,
                "status": if l.is_accepting() { "running" } else { "stopped" },
            })
        })
        .collect();
    let plugins = node.plugins.status();
    let relay = plugins
        .get(crate::plugins::events_sidecar::NAME)
        .cloned()
        .unwrap_or_else(|| json!({"enabled": false}));
    json!({
        "node": engine.config().nodename,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": engine.uptime().as_secs(),
        "clients_online": online,
        "sessions": sessions,
        "sessions_offline": sessions.saturating_sub(online),
        "subscriptions": engine.subscription_count(),
        "retained_messages": engine.retained_count(),
        "rates": {
            "publish_received_per_s": received,
            "publish_sent_per_s": sent,
        },
        "totals": {
            "connects": Metrics::get(&m.mqtt_connect_received),
            "publish_received": Metrics::get(&m.mqtt_publish_received),
            "publish_sent": Metrics::get(&m.mqtt_publish_sent),
            "queue_message_drop": Metrics::get(&m.queue_message_drop),
        },
        "store": {
            "enabled": engine.has_store(),
            "size_bytes": Metrics::get(&m.store_size_bytes),
            "commits": Metrics::get(&m.store_commits),
        },
        "listeners": listeners,
        "relay": relay,
        "plugins": plugins,
        "cluster": node.cluster.as_ref().map(|c| c.status()),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: the numbers rendered on the server (so the page is right without
/// JavaScript), refreshed every two seconds by a small inline script.
pub fn page(node: &Node) -> String {
    let s = snapshot(node);
    let num = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let card = |id: &str, label: &str, value: String| {
        format!(
            "<div class=\"card\"><div class=\"label\">{label}</div><div class=\"value\" id=\"{id}\">{value}</div></div>"
        )
    };
    let mut cards = String::new();
    for (id, label, value) in [
        (
            "clients-online",
            "clients online",
            num(&s["clients_online"]),
        ),
        (
            "sessions-offline",
            "offline sessions",
            num(&s["sessions_offline"]),
        ),
        ("subscriptions", "subscriptions", num(&s["subscriptions"])),
        (
            "retained",
            "retained messages",
            num(&s["retained_messages"]),
        ),
        (
            "rate-in",
            "publishes in /s",
            num(&s["rates"]["publish_received_per_s"]),
        ),
        (
            "rate-out",
            "publishes out /s",
            num(&s["rates"]["publish_sent_per_s"]),
        ),
        ("relay-sent", "events relayed", num(&s["relay"]["sent"])),
        (
            "relay-dropped",
            "events dropped",
            num(&s["relay"]["dropped"]),
        ),
    ] {
        cards.push_str(&card(id, label, value));
    }
    let mut rows = String::new();
    if let Some(listeners) = s["listeners"].as_array() {
        for l in listeners {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(l["type"].as_str().unwrap_or("")),
                esc(l["name"].as_str().unwrap_or("")),
                esc(l["address"].as_str().unwrap_or("")),
                esc(l["mountpoint"].as_str().unwrap_or("")),
                esc(l["status"].as_str().unwrap_or("")),
                esc(l["status"].as_str().unwrap_or("")),
            );
        }
    }
    let node = esc(s["node"].as_str().unwrap_or(""));
    let version = esc(s["version"].as_str().unwrap_or(""));
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vmq-broker {node}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1a202c; background: #f7fafc; }}
h1 {{ font-size: 1.4em; margin-bottom: 0.2em; }}
.sub {{ color: #4a5568; margin-bottom: 1.5em; }}
.cards {{ display: grid; grid-template-columns: repeat(4, minmax(10em, 1fr)); gap: 1em; }}
.card {{ background: white; border-radius: 8px; padding: 1em; box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
.label {{ color: #4a5568; font-size: .85em; }}
.value {{ font-size: 2em; font-weight: 600; color: #2b6cb0; }}
table {{ margin-top: 2em; border-collapse: collapse; background: white; }}
td, th {{ padding: .4em 1em; border-bottom: 1px solid #e2e8f0; text-align: left; }}
.running {{ color: #2f855a; }} .stopped {{ color: #c53030; }}
</style></head>
<body>
<h1>vmq-broker <span id="node">{node}</span></h1>
<div class="sub">version {version}, up <span id="uptime">{uptime}</span> s, relay <span id="relay-state">{relay}</span></div>
<div class="cards">{cards}</div>
<table><thead><tr><th>type</th><th>name</th><th>address</th><th>mountpoint</th><th>status</th></tr></thead>
<tbody id="listeners">{rows}</tbody></table>
<script>
const ids = {{
  "clients-online": s => s.clients_online, "sessions-offline": s => s.sessions_offline,
  "subscriptions": s => s.subscriptions, "retained": s => s.retained_messages,
  "rate-in": s => s.rates.publish_received_per_s, "rate-out": s => s.rates.publish_sent_per_s,
  "relay-sent": s => s.relay.sent || 0, "relay-dropped": s => s.relay.dropped || 0,
  "uptime": s => s.uptime_seconds,
}};
async function refresh() {{
  try {{
    const s = await (await fetch("status.json")).json();
    for (const [id, get] of Object.entries(ids)) document.getElementById(id).textContent = get(s);
  }} catch (e) {{ /* the broker may be restarting: try again later */ }}
}}
setInterval(refresh, 2000);
</script>
</body></html>
"#,
        uptime = num(&s["uptime_seconds"]),
        relay = if s["relay"]["enabled"].as_bool().unwrap_or(false) {
            "on"
        } else {
            "off"
        },
    )
}
