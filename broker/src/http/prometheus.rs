//! `/metrics`: the Prometheus text format (version 0.0.4). The broker's counters keep VerneMQ's
//! names (`mqtt_connect_received`, `queue_message_in`, `socket_open`, ...), each labelled with
//! the node; the relay adds VerneMQ's `sidecar_events{hook}` / `sidecar_events_error{hook}` and
//! its own drop reasons, backlog, connections and bytes.

use std::fmt::Write as _;

use super::Node;
use crate::metrics::{GAUGES, Metrics};
use crate::plugins::MetricsOut;

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    node: String,
    /// `prometheus_namespace`: put before every metric name.
    namespace: String,
}

impl MetricsOut for Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let ns = &self.namespace;
        let _ = writeln!(self.text, "# HELP {ns}{name} {help}");
        let _ = writeln!(self.text, "# TYPE {ns}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let ns = &self.namespace;
        let _ = write!(self.text, "{ns}{name}{{node=\"{}\"", self.node);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", label(v));
        }
        let _ = writeln!(self.text, "}} {value}");
    }
}

/// Renders every metric of the broker.
pub fn render(node: &Node) -> String {
    let engine = &node.engine;
    let mut out = Out {
        text: String::with_capacity(8192),
        node: label(&engine.config().nodename),
        namespace: engine.config().prometheus_namespace.clone(),
    };
    let values = engine.metrics().snapshot();
    for ((name, help), (_, value)) in Metrics::descriptions().into_iter().zip(values) {
        let kind = if GAUGES.contains(&name) {
            "gauge"
        } else {
            "counter"
        };
        out.single(name, kind, help, value);
    }
    let online = engine.online_count();
    out.single(
        "mqtt_clients_online",
        "gauge",
        "Sessions with a connected client.",
        online as u64,
    );
    out.single(
        "queue_processes",
        "gauge",
        "Sessions, online and offline (VerneMQ: one queue process each).",
        engine.session_count() as u64,
    );
    out.single(
        "router_subscriptions",
        "gauge",
        "Subscriptions in the routing table.",
        engine.subscription_count() as u64,
    );
    out.single(
        "retain_messages",
        "gauge",
        "Retained messages stored.",
        engine.retained_count() as u64,
    );
    out.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        engine.uptime().as_secs(),
    );
    node.plugins.metrics(&mut out);
    if let Some(cluster) = &node.cluster {
        cluster.metrics(&mut out);
    }
    out.text
}
