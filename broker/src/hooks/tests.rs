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
