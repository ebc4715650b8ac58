//! Every key of VerneMQ's generated `vernemq.conf` that the typed parser does not implement,
//! with what it means here: a VerneMQ user's file starts the broker as it is.
//!
//! - class 1, implemented: parsed in `config/mod.rs`, `config/listeners.rs` or by a plugin;
//! - class 2, [`KeyClass::NoEffect`]: no meaning in this implementation (Erlang VM tuning,
//!   LevelDB tuning when the store is redb, acceptor pools, ...): accepted silently;
//! - class 3, [`KeyClass::NotYet`]: a user would notice that it does nothing (a plugin that does
//!   not exist here, a log sink not written yet): accepted, with one warning at start saying what
//!   happens instead.
//!
//! `docs/config-keys.md` lists them all, from this table.

/// What a VerneMQ key that the typed parser does not implement does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// Accepted silently: it has no meaning here (why).
    NoEffect(&'static str),
    /// Accepted with a warning at start: not (yet) implemented (what happens instead).
    NotYet(&'static str),
}

/// Keys matched exactly or by pattern: `*` stands for one level (a name), a trailing `.**` for
/// any number of levels.
const TABLE: &[(&str, KeyClass)] = &[
    // Erlang VM and distribution tuning.
    (
        "erlang.**",
        KeyClass::NoEffect("Erlang VM tuning; this broker is not an Erlang node"),
    ),
    (
        "metadata_plugin",
        KeyClass::NoEffect(
            "VerneMQ's metadata store (vmq_swc/vmq_plumtree); a single node keeps its metadata in the engine",
        ),
    ),
    // LevelDB (VerneMQ's message store); ours is redb.
    (
        "leveldb.**",
        KeyClass::NoEffect(
            "LevelDB tuning; the message store here is redb (message_store, persistent_data_dir)",
        ),
    ),
    // Clustering and netsplits.
    (
        "coordinate_registrations",
        KeyClass::NoEffect(
            "registrations are not serialized on one node: a connecting client's node claims the client id from the others",
        ),
    ),
    (
        "listener.vmqs.**",
        KeyClass::NotYet(
            "the TLS cluster listener takes clustering, certfile, keyfile, cafile and require_certificate; TLS 1.2 and 1.3 with rustls' ciphers and curves",
        ),
    ),
    // Acceptor pools and socket tuning: tokio accepts and sizes buffers itself.
    (
        "listener.nr_of_acceptors",
        KeyClass::NoEffect(
            "acceptor pools are an Erlang (ranch) notion; one accept loop per listener",
        ),
    ),
    (
        "listener.*.nr_of_acceptors",
        KeyClass::NoEffect(
            "acceptor pools are an Erlang (ranch) notion; one accept loop per listener",
        ),
    ),
    (
        "listener.*.*.nr_of_acceptors",
        KeyClass::NoEffect(
            "acceptor pools are an Erlang (ranch) notion; one accept loop per listener",
        ),
    ),
    (
        "listener.tcp.buffer_sizes",
        KeyClass::NoEffect(
            "socket buffers are sized by the kernel and the connection's own read buffer",
        ),
    ),
    (
        "listener.*.*.buffer_sizes",
        KeyClass::NoEffect(
            "socket buffers are sized by the kernel and the connection's own read buffer",
        ),
    ),
    (
        "listener.tcp.active_n",
        KeyClass::NoEffect("an Erlang socket option"),
    ),
    (
        "listener.*.*.active_n",
        KeyClass::NoEffect("an Erlang socket option"),
    ),
    (
        "listener.*.proxy_protocol",
        KeyClass::NotYet("the PROXY protocol is not read; peers are the TCP peers"),
    ),
    (
        "listener.*.*.proxy_protocol",
        KeyClass::NotYet("the PROXY protocol is not read; peers are the TCP peers"),
    ),
    (
        "listener.*.forward_connection_opts",
        KeyClass::NotYet("connection options are not forwarded to auth hooks yet"),
    ),
    (
        "listener.*.*.forward_connection_opts",
        KeyClass::NotYet("connection options are not forwarded to auth hooks yet"),
    ),
    (
        "listener.*.allowed_protocol_versions",
        KeyClass::NotYet("every listener accepts MQTT 3.1, 3.1.1 and 5.0"),
    ),
    (
        "listener.*.*.allowed_protocol_versions",
        KeyClass::NotYet("every listener accepts MQTT 3.1, 3.1.1 and 5.0"),
    ),
    (
        "listener.*.*.max_ws_frame_size",
        KeyClass::NotYet("WebSocket frames are bounded by max_message_size"),
    ),
    (
        "listener.*.*.websocket_path",
        KeyClass::NotYet("WebSocket listeners serve /mqtt"),
    ),
    // TLS details rustls decides.
    (
        "listener.*.ciphers",
        KeyClass::NotYet("rustls's safe default cipher suites are used"),
    ),
    (
        "listener.*.*.ciphers",
        KeyClass::NotYet("rustls's safe default cipher suites are used"),
    ),
    (
        "listener.*.eccs",
        KeyClass::NotYet("rustls's default key exchange groups are used"),
    ),
    (
        "listener.*.*.eccs",
        KeyClass::NotYet("rustls's default key exchange groups are used"),
    ),
    (
        "listener.*.crlfile",
        KeyClass::NotYet("certificate revocation lists are not checked"),
    ),
    (
        "listener.*.*.crlfile",
        KeyClass::NotYet("certificate revocation lists are not checked"),
    ),
    (
        "listener.*.tls_version",
        KeyClass::NotYet("TLS 1.2 and 1.3 are accepted"),
    ),
    (
        "listener.*.*.tls_version",
        KeyClass::NotYet("TLS 1.2 and 1.3 are accepted"),
    ),
    (
        "listener.ssl.psk_support",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server); certificates only"),
    ),
    (
        "listener.ssl.psk_identity_hint",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server); certificates only"),
    ),
    (
        "listener.ssl.pskfile",
        KeyClass::NotYet(
            "TLS-PSK is not supported (rustls has no PSK server); the file is not read",
        ),
    ),
    (
        "listener.ssl.pskfile_separator",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server)"),
    ),
    (
        "listener.ssl.*.psk_support",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server); certificates only"),
    ),
    (
        "listener.ssl.*.psk_identity_hint",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server)"),
    ),
    (
        "listener.ssl.*.pskfile",
        KeyClass::NotYet("TLS-PSK is not supported (rustls has no PSK server)"),
    ),
    (
        "listener.https.**",
        KeyClass::NotYet("the HTTP listener speaks plain HTTP; put a TLS proxy in front"),
    ),
    (
        "listener.http.*.http_modules",
        KeyClass::NotYet("every HTTP listener serves /metrics, /health, /status and /api/v1"),
    ),
    (
        "listener.http.*.http_module.**",
        KeyClass::NotYet("every HTTP listener serves /metrics, /health, /status and /api/v1"),
    ),
    // Session behaviour not implemented yet.
    (
        "expire_retain_cache",
        KeyClass::NoEffect(
            "retained messages live in one in-memory trie; there is no cache to expire",
        ),
    ),
    (
        "max_message_rate",
        KeyClass::NotYet("publishes are not rate-limited per client"),
    ),
    ("queue_type", KeyClass::NotYet("queues are FIFO")),
    (
        "max_drain_time",
        KeyClass::NoEffect("no queue migration between nodes"),
    ),
    (
        "max_msgs_per_drain_step",
        KeyClass::NoEffect("no queue migration between nodes"),
    ),
    (
        "suppress_lwt_on_session_takeover",
        KeyClass::NotYet("the will of a taken-over session follows MQTT's rules"),
    ),
    (
        "receive_max_client",
        KeyClass::NotYet("the client's receive maximum is what it announces"),
    ),
    ("max_packet_size", KeyClass::NotYet("see max_message_size")),
    (
        "m5_enhanced_auth",
        KeyClass::NotYet("enhanced authentication (AUTH packets) is not supported"),
    ),
    // Metrics sinks and the $SYS tree.
    (
        "systree_prefix",
        KeyClass::NotYet("the $SYS tree is under $SYS/<nodename>/"),
    ),
    (
        "graphite_include_labels",
        KeyClass::NotYet("Graphite lines carry no labels"),
    ),
    (
        "graphite.**",
        KeyClass::NotYet("only the graphite_* keys configure the Graphite reporter"),
    ),
    // Logging details not implemented.
    (
        "log.console.file.format",
        KeyClass::NotYet("log files are text"),
    ),
    (
        "log.*.rotation.compress_on_rotate",
        KeyClass::NotYet("rotated log files are not compressed"),
    ),
    (
        "log.error.file.format",
        KeyClass::NotYet("log files are text"),
    ),
    (
        "log.syslog.format",
        KeyClass::NotYet("syslog lines are RFC 3164"),
    ),
    (
        "log.syslog.ident",
        KeyClass::NotYet("syslog lines are tagged vmq-broker"),
    ),
    (
        "log.syslog.remote.**",
        KeyClass::NotYet("syslog goes to the local /dev/log only"),
    ),
    (
        "log.console.console.format",
        KeyClass::NoEffect("log lines are text"),
    ),
    (
        "log.crash",
        KeyClass::NoEffect(
            "Erlang crash logs; a crash here is a process exit with its message on stderr",
        ),
    ),
    (
        "log.crash.**",
        KeyClass::NoEffect(
            "Erlang crash logs; a crash here is a process exit with its message on stderr",
        ),
    ),
    ("log.sasl", KeyClass::NoEffect("Erlang SASL reports")),
    ("log.sasl.**", KeyClass::NoEffect("Erlang SASL reports")),
    (
        "logging.obfuscation_secret",
        KeyClass::NotYet("client ids and user names are logged as they are"),
    ),
    (
        "logging.keepalive_as_warning",
        KeyClass::NotYet("keep-alive expiries are logged at debug"),
    ),
    // VerneMQ plugins that do not exist here (yet).
    (
        "vmq_bridge.**",
        KeyClass::NotYet("there is no MQTT bridge (vmq_bridge); ignored"),
    ),
    (
        "vmq_bcrypt.**",
        KeyClass::NoEffect("bcrypt worker pools of VerneMQ's Erlang NIF"),
    ),
    (
        "vmq_http_pub.**",
        KeyClass::NotYet("there is no HTTP publish endpoint (vmq_http_pub); ignored"),
    ),
    (
        "vmq_web_ui.**",
        KeyClass::NotYet("there is no web UI beyond /status; ignored"),
    ),
    (
        "vmq_generic_msg_store.**",
        KeyClass::NoEffect("VerneMQ's message store; ours is redb"),
    ),
    (
        "plugins.*.path",
        KeyClass::NotYet("Erlang plugins cannot be loaded; only the built-in ones exist"),
    ),
    (
        "myplugin.**",
        KeyClass::NotYet("an example key of VerneMQ's file for custom Erlang plugins; ignored"),
    ),
];

/// Whether `pattern` (levels, `*` for one level, a trailing `**` for any levels) matches `key`.
fn matches(pattern: &str, key: &str) -> bool {
    let mut k = key.split('.');
    for p in pattern.split('.') {
        if p == "**" {
            return k.next().is_some();
        }
        match k.next() {
            Some(level) if p == "*" || p == level => {}
            _ => return false,
        }
    }
    k.next().is_none()
}

/// The class of a key the typed parser did not take, if VerneMQ has it.
pub fn lookup(key: &str) -> Option<KeyClass> {
    TABLE
        .iter()
        .find(|(pattern, _)| matches(pattern, key))
        .map(|(_, class)| *class)
}

/// VerneMQ plugins that do not exist here: `plugins.<name> = on` is accepted with a warning.
pub const ABSENT_PLUGINS: [&str; 4] = [
    "vmq_bridge",
    "vmq_http_pub",
    "vmq_web_ui",
    "vmq_generic_msg_store",
];

/// Every key the parser knows by name, for "did you mean" suggestions: the typed ones (given by
/// the parser) and the literal ones of the table.
pub fn literal_keys() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(p, _)| *p).filter(|p| !p.contains('*'))
}

/// Levenshtein distance (for suggestions; keys are short).
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key nearest to `key`, if it is near enough to be a misspelling.
pub fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (key.len() / 4).clamp(1, 3);
    known
        .map(|k| (distance(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// `docs/config-keys.md`: every key in one table, by class.
pub fn render_docs(typed: &[&str]) -> String {
    let mut md = String::from(
        "# Configuration keys\n\n\
         Every key of VerneMQ's generated `vernemq.conf` is known to `vmq-broker`: a VerneMQ\n\
         user's file starts the broker as it is. A key is in one of three classes:\n\n\
         1. **implemented**: its VerneMQ meaning holds here;\n\
         2. **no effect**: it has no meaning in this implementation; accepted silently;\n\
         3. **not implemented**: a user would notice; accepted, with one warning at start saying\n\
         \x20  what happens instead.\n\n\
         `vmq-broker --config FILE --check` lists the class 2 and 3 keys a file sets. Any other\n\
         key is an error naming its line, with the nearest known key as a suggestion. VerneMQ's\n\
         Docker variables (`DOCKER_VERNEMQ_ALLOW_ANONYMOUS=on`, `__` for `.`) apply over the file.\n\
         `*` stands for one level of a key (a listener's name), `**` for any levels.\n\n\
         This page is generated from `broker/src/config/keys.rs` by a test\n\
         (`UPDATE_DOCS=1 cargo test -p vmq-broker --lib docs_list_every_key`).\n\n\
         | key | class | here |\n|---|---|---|\n",
    );
    for k in typed {
        md.push_str(&format!("| `{k}` | implemented | |\n"));
    }
    for k in [
        "listener.{tcp,ssl,ws,wss}.*",
        "listener.{tcp,ssl,ws,wss}.*.{mountpoint,max_connections}",
        "listener.{ssl,wss}.*.{certfile,keyfile,cafile,require_certificate,use_identity_as_username}",
        "listener.{tcp,ssl,ws,wss}.<setting> (the same, for every listener of the transport)",
        "listener.http.*",
        "plugins.*.priority",
    ] {
        md.push_str(&format!("| `{k}` | implemented | |\n"));
    }
    for (key, class) in TABLE {
        let (name, why) = match class {
            KeyClass::NoEffect(why) => ("no effect", why),
            KeyClass::NotYet(what) => ("not implemented", what),
        };
        md.push_str(&format!("| `{key}` | {name} | {why} |\n"));
    }
    md
}

/// The keys the typed parser implements by name (for suggestions; listener keys are patterns).
pub(super) const TYPED_KEYS: &[&str] = &[
    "nodename",
    "allow_anonymous",
    "max_inflight_messages",
    "max_online_messages",
    "max_offline_messages",
    "persistent_client_expiration",
    "max_message_size",
    "max_client_id_size",
    "topic_alias_max",
    "topic_alias_max_client",
    "receive_max_broker",
    "shared_subscription_policy",
    "retain_available",
    "persistent_data_dir",
    "message_store",
    "message_store.durability",
    "max_keepalive",
    "log.console.level",
    "listener.max_connections",
    "max_connections",
    "max_connect_rate",
    "max_subscriptions_per_client",
    "connect_timeout",
    "vmq_passwd.password_file",
    "vmq_passwd.password_reload_interval",
    "vmq_acl.acl_file",
    "vmq_acl.acl_reload_interval",
    "vmq_events_sidecar.hostname",
    "vmq_events_sidecar.port",
    "vmq_events_sidecar.pool_size",
    "vmq_events_sidecar.backlog_size",
    "vmq_events_sidecar.hooks",
    "vmq_events_sidecar.shutdown_timeout",
    "vmq_events_sidecar.delivery",
    "vmq_events_sidecar.ack_timeout",
    "plugins.vmq_passwd",
    "plugins.vmq_acl",
    "plugins.vmq_events_sidecar",
    "systree_enabled",
    "systree_interval",
    "systree_qos",
    "systree_retain",
    "systree_mountpoint",
    "graphite_enabled",
    "graphite_host",
    "graphite_port",
    "graphite_interval",
    "graphite_prefix",
    "graphite_api_key",
    "topic_max_depth",
    "log.console",
    "log.console.file",
    "log.console.rotation.size",
    "log.console.rotation.keep",
    "log.error",
    "log.error.file",
    "log.error.rotation.size",
    "log.error.rotation.keep",
    "log.syslog",
    "log.syslog.facility",
    "upgrade_outgoing_qos",
    "override_max_online_messages",
    "max_last_will_delay",
    "listener.max_connection_lifetime",
    "max_ws_frame_size",
    "retry_interval",
    "prometheus_namespace",
    "listener.vmq.clustering",
    "listener.vmqs.clustering",
    "listener.vmqs.certfile",
    "listener.vmqs.keyfile",
    "listener.vmqs.cafile",
    "listener.vmqs.require_certificate",
    "distributed_cookie",
    "outgoing_clustering_buffer_size",
    "cluster.gossip_interval",
    "cluster.reconnect_interval",
    "cluster.takeover_timeout",
    "cluster.fault_injection",
    "allow_register_during_netsplit",
    "allow_publish_during_netsplit",
    "allow_subscribe_during_netsplit",
    "allow_unsubscribe_during_netsplit",
];

/// What happens to a plugin that is not one of ours.
pub(super) const NO_SUCH_PLUGIN: &str =
    "no such plugin here (Erlang plugins cannot be loaded); the broker runs without it";

/// A plugin name that is not ours is refused when it looks like a misspelling of one of ours
/// (`vmq_paswd`: the broker must not start without the auth the user asked for).
pub(super) fn check_plugin_name(name: &str) -> Result<(), String> {
    let known = super::KNOWN_PLUGINS.iter().chain(&ABSENT_PLUGINS).copied();
    match suggest(name, known) {
        Some(near) => Err(format!(
            "unknown plugin {name:?} (did you mean {near:?}? available: {})",
            super::KNOWN_PLUGINS.join(", ")
        )),
        None => Ok(()),
    }
}

/// An unknown key, with the nearest known key when it looks misspelt.
pub(super) fn unknown_key(key: &str) -> String {
    let known = TYPED_KEYS.iter().copied().chain(literal_keys());
    match suggest(key, known) {
        Some(near) => format!("unknown key {key:?} (did you mean {near:?}?)"),
        None => format!("unknown key {key:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_list_every_key() {
        let doc = render_docs(TYPED_KEYS);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config-keys.md");
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &doc).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == doc,
            "docs/config-keys.md is stale: UPDATE_DOCS=1 cargo test -p vmq-broker --lib docs_list_every_key"
        );
    }

    #[test]
    fn patterns() {
        assert!(matches("erlang.**", "erlang.max_ports"));
        assert!(matches(
            "erlang.**",
            "erlang.schedulers.force_wakeup_interval"
        ));
        assert!(!matches("erlang.**", "erlang"));
        assert!(matches(
            "listener.*.*.allow_anonymous_override",
            "listener.tcp.name.allow_anonymous_override"
        ));
        assert!(!matches(
            "listener.*.*.allow_anonymous_override",
            "listener.tcp.allow_anonymous_override"
        ));
        assert_eq!(
            lookup("listener.ssl.pskfile"),
            Some(KeyClass::NotYet(
                "TLS-PSK is not supported (rustls has no PSK server); the file is not read"
            ))
        );
        assert!(matches!(
            lookup("leveldb.maximum_memory.percent"),
            Some(KeyClass::NoEffect(_))
        ));
        assert_eq!(lookup("allow_anonymous"), None);
    }

    #[test]
    fn suggestions() {
        let known = ["allow_anonymous", "max_inflight_messages", "nodename"];
        assert_eq!(
            suggest("alow_anonymous", known.into_iter()),
            Some("allow_anonymous")
        );
        assert_eq!(
            suggest("max_inflight_mesages", known.into_iter()),
            Some("max_inflight_messages")
        );
        assert_eq!(suggest("colour", known.into_iter()), None);
    }
}
