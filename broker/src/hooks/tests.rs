use std::sync::Mutex;

use super::*;

/// A plugin that answers every auth hook as told and records that it was asked.
struct Scripted {
    name: &'static str,
    priority: i32,
    answer: AuthResult<RegisterModifiers>,
    asked: Arc<Mutex<Vec<&'static str>>>,
    notified: Arc<Mutex<Vec<(&'static str, Hook)>>>,
    wants: HookSet,
}

impl Plugin for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn wants(&self, hook: Hook) -> bool {
        self.wants.contains(hook)
    }
    fn auth_on_register<'a>(
        &'a self,
        _req: &'a RegisterRequest<'a>,
    ) -> BoxFuture<'a, AuthResult<RegisterModifiers>> {
        self.asked.lock().unwrap().push(self.name);
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
    fn notify(&self, event: &Notification<'_>) {
        self.notified
            .lock()
            .unwrap()
            .push((self.name, event.hook()));
    }
}

struct Log {
    asked: Arc<Mutex<Vec<&'static str>>>,
    notified: Arc<Mutex<Vec<(&'static str, Hook)>>>,
}

fn chain(spec: Vec<(&'static str, i32, AuthResult<RegisterModifiers>)>) -> (Hooks, Log) {
    let log = Log {
        asked: Arc::default(),
        notified: Arc::default(),
    };
    let plugins = spec
        .into_iter()
        .map(|(name, priority, answer)| {
            Arc::new(Scripted {
                name,
                priority,
                answer,
                asked: log.asked.clone(),
                notified: log.notified.clone(),
                wants: HookSet::default()
                    .with(Hook::AuthOnRegister)
                    .with(Hook::OnClientWakeup),
            }) as Arc<dyn Plugin>
        })
        .collect();
    (Hooks::new(plugins), log)
}

fn client() -> ClientInfo {
    ClientInfo {
        mountpoint: String::new(),
        client_id: Arc::from("c"),
        username: None,
        peer: "127.0.0.1:1".parse().unwrap(),
        session_id: Arc::from("s"),
        protocol: Protocol::V5,
    }
}

async fn register(hooks: &Hooks) -> Option<AuthResult<RegisterModifiers>> {
    let c = client();
    let props = Properties::default();
    hooks
        .auth_on_register(&RegisterRequest {
            client: &c,
            password: None,
            clean_start: true,
            properties: &props,
        })
        .await
}

#[tokio::test]
async fn the_first_plugin_by_priority_that_decides_wins() {
    let modifiers = RegisterModifiers {
        mountpoint: Some("m".into()),
        ..Default::default()
    };
    // Config order c, a, b; priorities put a (-1) first, then b and c (0, in config order).
    let (hooks, log) = chain(vec![
        ("c", 0, AuthResult::refused()),
        ("a", -1, AuthResult::Next),
        ("b", 0, AuthResult::OkWith(modifiers.clone(), None)),
    ]);
    let names: Vec<&str> = hooks.plugins().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["a", "c", "b"]);
    // a says next, c refuses: b is never asked.
    assert_eq!(register(&hooks).await, Some(AuthResult::Error(None)));
    assert_eq!(*log.asked.lock().unwrap(), ["a", "c"]);

    let (hooks, log) = chain(vec![
        ("a", 0, AuthResult::Next),
        ("b", 1, AuthResult::OkWith(modifiers.clone(), None)),
        ("c", 2, AuthResult::refused_because("too late")),
    ]);
    assert_eq!(
        register(&hooks).await,
        Some(AuthResult::OkWith(modifiers, None))
    );
    assert_eq!(*log.asked.lock().unwrap(), ["a", "b"]);

    // Everyone says next: nobody decided.
    let (hooks, _) = chain(vec![("a", 0, AuthResult::Next), ("b", 0, AuthResult::Next)]);
    assert_eq!(register(&hooks).await, None);
}

#[tokio::test]
async fn notifications_reach_every_plugin_that_wants_them_in_order() {
    let (hooks, log) = chain(vec![("b", 1, AuthResult::Next), ("a", 0, AuthResult::Next)]);
    assert!(hooks.wants(Hook::OnClientWakeup));
    assert!(!hooks.wants(Hook::OnPublish));
    let c = client();
    hooks.notify(&Notification::ClientWakeup { client: &c });
    assert_eq!(
        *log.notified.lock().unwrap(),
        [("a", Hook::OnClientWakeup), ("b", Hook::OnClientWakeup)]
    );
}

#[test]
fn register_modifiers_are_vernemqs_names_and_unknown_ones_are_refused() {
    let m: RegisterModifiers = serde_json::from_value(serde_json::json!({
        "mountpoint": "mynewmount", "client_id": "changed_client_id",
        "max_inflight_messages": 10000, "retry_interval": 20000
    }))
    .unwrap();
    assert_eq!(m.mountpoint.as_deref(), Some("mynewmount"));
    assert_eq!(m.not_applied(), ["retry_interval"]);
    // VerneMQ's validator allows clean_session, not clean_start.
    assert!(
        serde_json::from_value::<RegisterModifiers>(serde_json::json!({"clean_start": true}))
            .is_err()
    );
}

/// A plugin for the publish chain: decides some topics at once, some when awaited, and
/// records what it was asked when awaited.
struct Publishes {
    name: &'static str,
    priority: i32,
    /// `topic -> answer` given at once; topics not listed wait for `later`.
    now: fn(&str) -> Option<AuthResult<PublishModifiers>>,
    later: fn(&str) -> AuthResult<PublishModifiers>,
    asked: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Plugin for Publishes {
    fn name(&self) -> &str {
        self.name
    }
    fn priority(&self) -> i32 {
        self.priority
    }
    fn wants(&self, hook: Hook) -> bool {
        hook == Hook::AuthOnPublish
    }
    fn auth_on_publish_now(
        &self,
        _client: &ClientInfo,
        message: &MessageInfo<'_>,
    ) -> Option<AuthResult<PublishModifiers>> {
        (self.now)(message.topic)
    }
    fn auth_on_publish<'a>(
        &'a self,
        _client: &'a ClientInfo,
        message: &'a MessageInfo<'a>,
    ) -> BoxFuture<'a, AuthResult<PublishModifiers>> {
        self.asked
            .lock()
            .unwrap()
            .push((self.name, message.topic.to_owned()));
        let answer = (self.later)(message.topic);
        Box::pin(async move {
            tokio::task::yield_now().await;
            answer
        })
    }
}

#[tokio::test]
async fn publishes_asked_together_get_the_answers_of_the_chain_one_by_one() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let rewritten = PublishModifiers {
        topic: Some("p2".into()),
        ..Default::default()
    };
    let first = Publishes {
        name: "p1",
        priority: 0,
        now: |t| match t {
            "now/ok" => Some(AuthResult::Ok(None)),
            "now/next" => Some(AuthResult::Next),
            "now/no" => Some(AuthResult::refused_because("no")),
            _ => None,
        },
        later: |t| match t {
            "later/ok" => AuthResult::Ok(None),
            "later/no" => AuthResult::refused(),
            _ => AuthResult::Next,
        },
        asked: asked.clone(),
    };
    let second = Publishes {
        name: "p2",
        priority: 1,
        now: |_| None,
        later: |_| {
            AuthResult::OkWith(
                PublishModifiers {
                    topic: Some("p2".into()),
                    ..Default::default()
                },
                None,
            )
        },
        asked: asked.clone(),
    };
    let hooks = Hooks::new(vec![Arc::new(second), Arc::new(first)]);
    let c = client();
    let payload = Bytes::from_static(b"x");
    let props = Properties::default();
    let topics = [
        "now/ok", "now/next", "now/no", "later/ok", "later/no", "other",
    ];
    let infos: Vec<MessageInfo<'_>> = topics
        .iter()
        .map(|t| MessageInfo {
            topic: t,
            payload: &payload,
            qos: QoS::AtMostOnce,
            retain: false,
            properties: &props,
        })
        .collect();
    let together = hooks.auth_on_publish_batch(&c, &infos).await;
    assert_eq!(
        together,
        [
            Some(AuthResult::Ok(None)),
            Some(AuthResult::OkWith(rewritten.clone(), None)),
            Some(AuthResult::refused_because("no")),
            Some(AuthResult::Ok(None)),
            Some(AuthResult::refused()),
            Some(AuthResult::OkWith(rewritten, None)),
        ]
    );
    // Each plugin was asked (awaited) about what it could not answer at once and no earlier
    // plugin decided, in order.
    let seen: Vec<(&str, String)> = std::mem::take(&mut *asked.lock().unwrap());
    let expect = |v: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        v.iter().map(|(p, t)| (*p, t.to_string())).collect()
    };
    assert_eq!(
        seen,
        expect(&[
            ("p1", "later/ok"),
            ("p1", "later/no"),
            ("p1", "other"),
            ("p2", "now/next"),
            ("p2", "other"),
        ])
    );
    // The same answers as the chain gives one message at a time.
    for (info, answer) in infos.iter().zip(together) {
        assert_eq!(
            hooks.auth_on_publish(&c, info).await,
            answer,
            "{}",
            info.topic
        );
    }
}
