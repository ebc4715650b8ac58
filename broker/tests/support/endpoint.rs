//! A real HTTP server (axum) standing in for a webhook endpoint or a script's HTTP target:
//! records every request, answers as the test says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::WAIT;

/// What the test endpoint answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Json(Value),
    /// JSON with `cache-control: max-age=N`.
    Cached(Value, u32),
    Status(u16),
    Garbage,
    Hang,
}

pub type Responder = Arc<dyn Fn(&str, &Value) -> Reply + Send + Sync>;

/// One request the endpoint received.
#[derive(Clone, Debug)]
pub struct Call {
    pub hook: String,
    pub content_type: String,
    pub body: Value,
}

/// The test's webhook endpoint: records every call, answers as the test says.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub responder: Arc<Mutex<Responder>>,
}

/// VerneMQ's "all is well": ok for verdict hooks, `{}` for notifications.
pub fn ok_reply(hook: &str, _body: &Value) -> Reply {
    if hook.starts_with("auth_on_")
        || hook.starts_with("on_deliver")
        || hook.starts_with("on_unsub")
    {
        Reply::Json(json!({"result": "ok"}))
    } else {
        Reply::Json(json!({}))
    }
}

pub async fn handle(State(e): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    // Webhooks say which hook in `vernemq-hook`; the seed's Lua script in `x-action`.
    let hook = headers
        .get("vernemq-hook")
        .or_else(|| headers.get("x-action"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    e.calls.lock().push(Call {
        hook: hook.clone(),
        content_type,
        body: body.clone(),
    });
    let responder = e.responder.lock().clone();
    match responder(&hook, &body) {
        Reply::Json(v) => (StatusCode::OK, v.to_string()).into_response(),
        Reply::Cached(v, age) => (
            StatusCode::OK,
            [("cache-control", format!("private, max-age={age}"))],
            v.to_string(),
        )
            .into_response(),
        Reply::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Reply::Garbage => (StatusCode::OK, "<html>not json").into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Endpoint {
    pub async fn start() -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = Endpoint {
            url: format!("http://127.0.0.1:{port}/vmq"),
            calls: Arc::default(),
            responder: Arc::new(Mutex::new(Arc::new(ok_reply))),
        };
        let app = axum::Router::new()
            .route("/vmq", axum::routing::post(handle))
            .route("/", axum::routing::post(handle))
            .with_state(e.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        e
    }

    pub fn answer(&self, f: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) {
        *self.responder.lock() = Arc::new(f);
    }

    pub fn calls(&self, hook: &str) -> Vec<Call> {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.hook == hook)
            .cloned()
            .collect()
    }

    /// Waits until `hook` was called `n` times; its calls.
    pub async fn wait_calls(&self, hook: &str, n: usize) -> Vec<Call> {
        let start = Instant::now();
        loop {
            let calls = self.calls(hook);
            if calls.len() >= n {
                return calls;
            }
            assert!(
                start.elapsed() < WAIT,
                "{hook}: {} calls of {n}; all: {:?}",
                calls.len(),
                self.calls.lock()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
