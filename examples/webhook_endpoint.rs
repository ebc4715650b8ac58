//! A minimal VerneMQ webhook endpoint: answers `{"result": "ok"}` to every verdict hook
//! (`auth_on_*`, `on_deliver`, `on_unsubscribe`) and `{}` to notifications, as the
//! `vernemq-hook` header says, optionally allowing the broker to cache the answers
//! (`cache-control: max-age=N`). A starting point for your own, and the endpoint of
//! `bench/webhooks.sh`.
//!
//! ```text
//! cargo run --example webhook_endpoint -- --listen 127.0.0.1:8080 [--max-age 60] [--verbose]
//! # vernemq.conf:
//! plugins.vmq_webhooks = on
//! vmq_webhooks.auth1.hook = auth_on_register
//! vmq_webhooks.auth1.endpoint = http://127.0.0.1:8080/vmq
//! ```

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "A webhook endpoint that allows everything")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Let the broker cache `ok` answers for this many seconds.
    #[arg(long)]
    max_age: Option<u32>,
    /// Print every request (hook and body).
    #[arg(long)]
    verbose: bool,
}

async fn hook(State(args): State<Arc<Args>>, headers: HeaderMap, body: Bytes) -> Response {
    let hook = headers
        .get("vernemq-hook")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if args.verbose {
        println!("{hook}: {}", String::from_utf8_lossy(&body));
    }
    let verdict = hook.starts_with("auth_on_")
        || hook.starts_with("on_deliver")
        || hook.starts_with("on_unsubscribe")
        || hook == "on_auth_m5";
    let answer = if verdict { r#"{"result":"ok"}"# } else { "{}" };
    match args.max_age {
        Some(age) if verdict => (
            [
                ("content-type", "application/json".to_owned()),
                ("cache-control", format!("max-age={age}")),
            ],
            answer,
        )
            .into_response(),
        _ => ([("content-type", "application/json")], answer).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("webhook endpoint on http://{}/", listener.local_addr()?);
    let app = axum::Router::new()
        .fallback(axum::routing::post(hook))
        .with_state(args);
    axum::serve(listener, app).await?;
    Ok(())
}
