//! The HTTP side of the broker (`listener.http.<name> = ip:port`): `/metrics` (Prometheus),
//! `/health`, `/status` (a page for humans) and `/status.json`, and the management API under
//! `/api/v1/` guarded by API keys sent as the basic-auth user, as VerneMQ does
//! (`curl http://KEY@127.0.0.1:8888/api/v1/session/show`).

pub mod api;
mod keys;
mod prometheus;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use tokio::net::TcpListener;

pub use keys::{ApiKeys, KeyEntry, KeyError};

use crate::config::HttpListenerConfig;
use crate::engine::Engine;
use crate::listener::ListenerHandle;
use crate::metrics::Metrics;
use crate::plugins::Host;
use crate::trace::Tracer;

/// What the operating surface serves from: the engine, and the node's own state (its
/// listeners, API keys, publish rates, traces and plugins).
#[derive(Debug)]
pub struct Node {
    /// The broker's core.
    pub engine: Arc<Engine>,
    /// Every listener (MQTT and HTTP), as operators see them.
    pub listeners: Vec<Arc<ListenerHandle>>,
    /// The management API's keys (in the data directory).
    pub api_keys: ApiKeys,
    /// Publish rates, sampled each second for the status page.
    pub rates: Arc<Rates>,
    /// Live traces of clients.
    pub tracer: Arc<Tracer>,
    /// The plugins.
    pub plugins: Arc<Host>,
    /// This node's part in a cluster, when `listener.vmq.clustering` is set.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}
/// Publish rates over the last second, for the status page (sampled by [`Rates::run`]).
#[derive(Debug, Default)]
pub struct Rates {
    received: AtomicU64,
    sent: AtomicU64,
}

impl Rates {
    /// PUBLISH packets received and sent per second, over the last second.
    pub fn get(&self) -> (u64, u64) {
        (self.received.load(Relaxed), self.sent.load(Relaxed))
    }

    /// Samples the counters each second until the broker stops.
    pub async fn run(self: Arc<Self>, engine: Arc<Engine>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let read = |b: &Engine| {
            (
                Metrics::get(&b.metrics().mqtt_publish_received),
                Metrics::get(&b.metrics().mqtt_publish_sent),
            )
        };
        let mut last = read(&engine);
        loop {
            tokio::select! {
                () = engine.stopping().cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = read(&engine);
            self.received.store(now.0 - last.0, Relaxed);
            self.sent.store(now.1 - last.1, Relaxed);
            last = now;
        }
    }
}

/// A bound HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    config: HttpListenerConfig,
    socket: TcpListener,
}

impl HttpListener {
    /// Binds the listener's address.
    pub async fn bind(config: HttpListenerConfig) -> std::io::Result<HttpListener> {
        let socket = TcpListener::bind(config.addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "listener.http.{} cannot bind {}: {e}",
                    config.name, config.addr
                ),
            )
        })?;
        Ok(HttpListener { config, socket })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Its handle, for `listener show` and `/health`.
    pub fn handle(&self) -> std::io::Result<Arc<ListenerHandle>> {
        Ok(Arc::new(ListenerHandle::new(
            "http",
            &self.config.name,
            self.local_addr()?,
            "",
        )))
    }

    /// Serves until the broker shuts down.
    pub async fn run(self, node: Arc<Node>) {
        tracing::info!(name = %self.config.name, addr = ?self.local_addr().ok(), "HTTP listener accepting");
        let shutdown = node.engine.stopping().clone();
        let app = router(node);
        let served = axum::serve(self.socket, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(name = %self.config.name, error = %e, "HTTP listener failed");
        }
    }
}

/// The routes.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/api/v1/{*command}", get(api).post(api))
        .with_state(node)
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus::render(&node),
    )
        .into_response()
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    let down: Vec<String> = node
        .listeners
        .iter()
        .filter(|l| !l.is_accepting())
        .map(|l| format!("{}.{}", l.kind, l.name))
        .collect();
    let mut body = serde_json::json!({
        "status": if down.is_empty() { "ok" } else { "down" },
        "listeners_down": down,
    });
    let mut healthy = down.is_empty();
    if let Some(cluster) = &node.cluster {
        // A node that does not see a majority of its cluster refuses what the
        // allow_*_during_netsplit keys do not allow: not healthy.
        let (quorum, members, running) = cluster.quorum();
        body["cluster"] = serde_json::json!({
            "quorum": quorum, "members": members, "running": running,
        });
        if !quorum {
            body["status"] = "down".into();
            healthy = false;
        }
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status_json(State(node): State<Arc<Node>>) -> Response {
    axum::Json(status::snapshot(&node)).into_response()
}

async fn status_page(State(node): State<Arc<Node>>) -> Html<String> {
    Html(status::page(&node))
}

/// The API key of a request: the basic-auth user (`http://KEY@host/...`), or a bearer token.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(b64) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let user = decoded.split(':').next()?;
        return (!user.is_empty()).then(|| user.to_owned());
    }
    value.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

fn error(status: u16, text: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(serde_json::json!({"type": "error", "text": text})),
    )
        .into_response()
}

async fn api(
    State(node): State<Arc<Node>>,
    Path(command): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let authorized = api_key(&headers).is_some_and(|k| node.api_keys.check(&k));
    if !authorized {
        let mut r = error(
            401,
            "an API key is required: http://<key>@host:port/api/v1/...",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"vmq-broker\""),
        );
        return r;
    }
    let words: Vec<&str> = command.split('/').filter(|w| !w.is_empty()).collect();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if words == ["trace", "client"] {
        return match crate::trace::start(
            &node.tracer,
            node.engine.stopping().clone(),
            &params,
            |mp, id| node.engine.is_online(mp, id),
        ) {
            Ok(stream) => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                Body::from_stream(stream),
            )
                .into_response(),
            Err(e) => error(400, &e),
        };
    }
    match api::run(&node, &words, api::Args::new(params)).await {
        Ok(answer) => axum::Json(answer.to_json()).into_response(),
        Err(e) => error(e.status, &e.text),
    }
}
