use super::*;

#[test]
fn parses_keys_and_listeners() {
    let c = Config::parse(
        "# comment\nallow_anonymous = on\nlistener.tcp.default = 127.0.0.1:1883\n\
         listener.tcp.iot = 127.0.0.1:1884\nlistener.tcp.iot.mountpoint = iot\n\
         persistent_client_expiration = 1h30m\nmax_message_size = 64KB\n",
        "t",
    )
    .unwrap();
    assert!(c.allow_anonymous);
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[1].mountpoint, "iot");
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(5400))
    );
    assert_eq!(c.max_message_size, 65536);
}

#[test]
fn huge_durations_are_errors_not_panics() {
    // Found by the config fuzz target.
    for v in [
        "037w547814851762060w",
        "18446744073709551615w",
        "18446744073709551615s1s",
    ] {
        let e = parse_duration(v).unwrap_err();
        assert!(e.contains("too long"), "{v}: {e}");
    }
    assert!(reload_interval("037w547814851762060w").is_err());
}

#[test]
fn errors_name_the_line() {
    let e = Config::parse(
        "listener.tcp.a = 127.0.0.1:1\n\nallow_anonymus = on\n",
        "f.conf",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.conf:3: unknown key \"allow_anonymus\" (did you mean \"allow_anonymous\"?)"
    );
    let e = Config::parse("allow_anonymous = maybe", "f.conf").unwrap_err();
    assert!(
        e.to_string().starts_with("f.conf:1: expected on or off"),
        "{e}"
    );
    let e = Config::parse("listener.tcp.a = nowhere", "f").unwrap_err();
    assert!(e.to_string().contains("expected ip:port"), "{e}");
    assert!(
        Config::parse("allow_anonymous = on", "f").is_err(),
        "no listener"
    );
    assert!(parse_duration("5x").is_err());
    let e = Config::parse("plugins.vmq_paswd = on", "f").unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown plugin \"vmq_paswd\" (did you mean \"vmq_passwd\"?"),
        "{e}"
    );
    let c = Config::parse(
        "listener.tcp.a = 127.0.0.1:1\nvmq_events_sidecar.hooks = on_tuesday",
        "f",
    )
    .unwrap();
    let s = &c.plugin_settings("vmq_events_sidecar")[0];
    assert_eq!(
        (s.key.as_str(), s.value.as_str(), s.line),
        ("hooks", "on_tuesday", 2)
    );
    assert_eq!(parse_duration("never").unwrap(), None);
}

#[test]
fn every_problem_of_a_file_is_reported_at_once_with_suggestions() {
    let text = "listener.tcp.a = 127.0.0.1:1\nalow_anonymous = on\nmax_inflight_mesages = 5\n\
                colour = blue\nmax_online_messages = lots\nlistener.ssl.b = 127.0.0.1:2\n";
    let e = Config::parse(text, "f.conf").unwrap_err();
    let lines: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "f.conf:2: unknown key \"alow_anonymous\" (did you mean \"allow_anonymous\"?)",
            "f.conf:3: unknown key \"max_inflight_mesages\" (did you mean \"max_inflight_messages\"?)",
            "f.conf:4: unknown key \"colour\"",
            "f.conf:5: expected a number, got \"lots\"",
            "f.conf:6: listener.ssl.b needs listener.ssl.b.certfile and listener.ssl.b.keyfile (or listener.ssl.certfile and listener.ssl.keyfile)",
        ]
    );
}

#[test]
fn vernemq_keys_are_known_and_classified() {
    let text = "listener.tcp.a = 127.0.0.1:1\nerlang.max_ports = 262144\n\
                leveldb.maximum_memory.percent = 70\nlistener.ssl.pskfile = ./etc/vmq.psk\n\
                listener.tcp.name.allow_anonymous_override = off\nplugins.vmq_bridge = on\n\
                plugins.vmq_webhooks = off\nvmq_diversity.auth_postgres.enabled = off\n";
    let c = Config::parse(text, "f").unwrap();
    let classes: Vec<(&str, bool)> = c
        .accepted
        .iter()
        .map(|a| (a.key.as_str(), matches!(a.class, keys::KeyClass::NotYet(_))))
        .collect();
    assert_eq!(
        classes,
        [
            ("erlang.max_ports", false),
            ("leveldb.maximum_memory.percent", false),
            ("listener.ssl.pskfile", true),
            ("plugins.vmq_bridge", true),
        ]
    );
    // vmq_webhooks and vmq_diversity are plugins here: their lines go to them.
    assert_eq!(c.plugin_settings("vmq_diversity").len(), 1);
    // The PSK file is not a listener named "pskfile", nor is "name" (a policy setting of a
    // listener with no address, as in VerneMQ's default file) a listener here.
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.not_implemented().count(), 2);
    assert_eq!(c.accepted[0].origin, "f:2");
}

#[test]
fn transport_settings_apply_to_every_listener_of_the_transport() {
    let text = "listener.ssl.a = 127.0.0.1:1\nlistener.ssl.b = 127.0.0.1:2\n\
                listener.ssl.certfile = c.pem\nlistener.ssl.keyfile = k.pem\n\
                listener.ssl.b.certfile = b.pem\nlistener.tcp.mountpoint = m\n\
                listener.tcp.t = 127.0.0.1:3\n";
    let c = Config::parse(text, "f").unwrap();
    let certs: Vec<_> = c
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.tls.certfile.clone(),
                l.mountpoint.as_str(),
            )
        })
        .collect();
    assert_eq!(
        certs,
        [
            ("t", None, "m"),
            ("a", Some(PathBuf::from("c.pem")), ""),
            ("b", Some(PathBuf::from("b.pem")), ""),
        ]
    );
}

#[test]
fn docker_environment_variables_override_the_file() {
    assert_eq!(
        env_key("DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT").as_deref(),
        Some("listener.tcp.default")
    );
    assert_eq!(
        env_key("DOCKER_VERNEMQ_ALLOW_ANONYMOUS").as_deref(),
        Some("allow_anonymous")
    );
    assert_eq!(env_key("HOME"), None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.conf");
    std::fs::write(
        &path,
        "listener.tcp.a = 127.0.0.1:1\nallow_anonymous = off\n",
    )
    .unwrap();
    let env = [
        ("DOCKER_VERNEMQ_ALLOW_ANONYMOUS".to_owned(), "on".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let c = Config::load_with_env(&path, env).unwrap();
    assert!(c.allow_anonymous);
    let env = [(
        "DOCKER_VERNEMQ_MAX_INFLIGHT_MESSAGES".to_owned(),
        "x".to_owned(),
    )];
    let e = Config::load_with_env(&path, env).unwrap_err().to_string();
    assert!(
        e.starts_with("environment DOCKER_VERNEMQ_MAX_INFLIGHT_MESSAGES: expected a number"),
        "{e}"
    );
}

#[test]
fn cluster_keys() {
    let base = "listener.tcp.default = 127.0.0.1:1883\n";
    let c = Config::parse(
        &format!(
            "{base}listener.vmq.clustering = 10.0.0.1:44053\ndistributed_cookie = s3cret\n\
             outgoing_clustering_buffer_size = 1MB\nallow_publish_during_netsplit = on\n\
             cluster.gossip_interval = 200ms\n"
        ),
        "t",
    )
    .unwrap();
    let k = &c.cluster;
    assert_eq!(k.listen, Some("10.0.0.1:44053".parse().unwrap()));
    assert_eq!((k.cookie.as_str(), k.outgoing_buffer), ("s3cret", 1 << 20));
    assert!(k.during_netsplit.publish && !k.during_netsplit.register);
    assert_eq!(k.gossip_interval, Duration::from_millis(200));
    assert!(k.tls.is_none());
    // TLS: the vmqs listener with its files.
    let c = Config::parse(
        &format!(
            "{base}listener.vmqs.clustering = 10.0.0.1:44053\nlistener.vmqs.certfile = c.pem\n\
             listener.vmqs.keyfile = k.pem\nlistener.vmqs.cafile = ca.pem\n"
        ),
        "t",
    )
    .unwrap();
    let tls = c.cluster.tls.expect("TLS");
    assert_eq!(tls.cafile.as_deref(), Some(std::path::Path::new("ca.pem")));
    for (bad, says) in [
        (
            "listener.vmqs.clustering = 10.0.0.1:44053\n",
            "needs listener.vmqs.certfile",
        ),
        (
            "listener.vmq.clustering = 10.0.0.1:44053\nlistener.vmqs.clustering = 10.0.0.1:44054\n",
            "set one of",
        ),
        ("listener.vmq.clustering = nowhere\n", "ip:port"),
        ("distributed_cookie = \n", "must not be empty"),
        ("outgoing_clustering_buffer_size = 10\n", "at least 1KB"),
        ("cluster.takeover_timeout = 0s\n", "positive duration"),
    ] {
        let e = Config::parse(&format!("{base}{bad}"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
