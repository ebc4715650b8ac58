//! `/metrics`: the Prometheus text format (version 0.0.4). The broker's counters keep VerneMQ's
//! names (`mqtt_connect_received`, `queue_message_in`, `socket_open`, ...), each labelled with
//! the node; the relay adds VerneMQ's `sidecar_events{hook}` / `sidecar_events_error{hook}` and
//! its own drop reasons, backlog, connections and bytes.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::broker::Broker;
use crate::metrics::{GAUGES, Metrics};

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    node: String,
}

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.text, "{name}{{node=\"{}\"", self.node);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", label(v));
        }
        let _ = writeln!(self.text, "}} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders every metric of the broker.
pub fn render(broker: &Broker) -> String {
    let mut out = Out {
        text: String::with_capacity(8192),
        node: label(&broker.config.nodename),
    };
    let values = broker.metrics.snapshot();
    for ((name, help), (_, value)) in Metrics::descriptions().into_iter().zip(values) {
        let kind = if GAUGES.contains(&name) {
            "gauge"
        } else {
            "counter"
        };
        out.single(name, kind, help, value);
    }
    let registry = &broker.registry;
    let online = registry.online();
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
        registry.len() as u64,
    );
    out.single(
        "router_subscriptions",
        "gauge",
        "Subscriptions in the routing table.",
        broker.router.subscription_count() as u64,
    );
    out.single(
        "retain_messages",
        "gauge",
        "Retained messages stored.",
        broker.router.retained_count() as u64,
    );
    out.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        broker.started.elapsed().as_secs(),
    );
    if let Some(relay) = &broker.plugins.events_sidecar {
        let m = relay.metrics();
        let snapshot = m.snapshot();
        out.header(
            "sidecar_events",
            "counter",
            "Events written to the sidecar, by hook.",
        );
        for c in &snapshot {
            out.sample("sidecar_events", &[("hook", c.hook.name())], c.sent);
        }
        out.header(
            "sidecar_events_error",
            "counter",
            "Events not delivered to the sidecar, by hook (every reason).",
        );
        for c in &snapshot {
            let total = c.dropped.iter().map(|(_, n)| n).sum();
            out.sample("sidecar_events_error", &[("hook", c.hook.name())], total);
        }
        out.header(
            "sidecar_events_dropped",
            "counter",
            "Events not delivered to the sidecar, by hook and reason.",
        );
        for c in &snapshot {
            for (reason, n) in c.dropped {
                out.sample(
                    "sidecar_events_dropped",
                    &[("hook", c.hook.name()), ("reason", reason.name())],
                    n,
                );
            }
        }
        out.single(
            "sidecar_backlog",
            "gauge",
            "Events waiting in the relay's backlogs (sidecar slow or away).",
            relay.backlog() as u64,
        );
        out.single(
            "sidecar_connections_up",
            "gauge",
            "Relay connections to the sidecar currently up.",
            m.connections_up.load(Relaxed),
        );
        out.single(
            "sidecar_connects",
            "counter",
            "Relay connections established since start.",
            m.connects.load(Relaxed),
        );
        out.single(
            "sidecar_bytes_sent",
            "counter",
            "Bytes written to the sidecar.",
            m.bytes_sent.load(Relaxed),
        );
    }
    out.text
}
