//! The HTTP side: one pooled keep-alive client for every endpoint (reqwest on the broker's
//! runtime), TLS as `vmq_webhooks.*` says, and VerneMQ's judgement of an answer: status
//! exactly 200 and a JSON body, else an error (`specs/webhooks.md` 2).

use bytes::Bytes;
use serde_json::Value;

use super::config::{TlsSettings, WebhooksConfig};

/// Answers larger than this are refused (a JSON verdict is a few hundred bytes).
pub const MAX_RESPONSE: usize = 1 << 20;

/// Why a call failed; the text is VerneMQ's reason where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Any status but 200.
    #[error("invalid_response_code {0}")]
    Status(u16),
    /// The body is not JSON.
    #[error("received_payload_not_json")]
    NotJson,
    /// No complete answer within `response_timeout`.
    #[error("timeout")]
    Timeout,
    /// The answer is larger than [`MAX_RESPONSE`].
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// Connecting or talking failed.
    #[error("{0}")]
    Transport(String),
}

/// A 200 JSON answer.
#[derive(Debug)]
pub struct Reply {
    /// The body.
    pub body: Value,
    /// `cache-control: max-age=N`, if the endpoint allows caching.
    pub max_age: Option<u64>,
}

/// The client every endpoint shares.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// Builds the client; TLS files that do not load are an error.
    pub fn new(config: &WebhooksConfig) -> Result<Http, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls(&config.tls)?)
            .pool_max_idle_per_host(config.pool_max_connections)
            .pool_idle_timeout(config.pool_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .http1_only()
            .build()
            .map_err(|e| format!("vmq_webhooks: cannot build the HTTP client: {e}"))?;
        Ok(Http { client })
    }

    /// POSTs `body` to `url` with the `vernemq-hook` header, and judges the answer. The
    /// caller bounds the time it takes.
    pub async fn exchange(&self, url: &str, hook: &str, body: Bytes) -> Result<Reply, CallError> {
        let mut response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("vernemq-hook", hook)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let max_age = response
            .headers()
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age);
        let mut data = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if data.len() + chunk.len() > MAX_RESPONSE {
                return Err(CallError::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        if status != 200 {
            return Err(CallError::Status(status));
        }
        let body = serde_json::from_slice(&data).map_err(|_| CallError::NotJson)?;
        Ok(Reply { body, max_age })
    }
}

fn transport(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        return CallError::Timeout;
    }
    // The innermost cause says what happened (connection refused, name not found, ...).
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::ConnectionRefused
    {
        return CallError::Transport("econnrefused".into());
    }
    CallError::Transport(format!(
        "{}: {cause}",
        if e.is_connect() { "connect" } else { "http" }
    ))
}

/// `max-age=<digits>` anywhere in a `cache-control` value, as VerneMQ scans for it.
pub fn max_age(value: &str) -> Option<u64> {
    let lower = value.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("max-age=") {
        rest = &rest[at + "max-age=".len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            return rest[..digits].parse().ok();
        }
    }
    None
}

fn tls(t: &TlsSettings) -> Result<rustls::ClientConfig, String> {
    let mut config = t.config("vmq_webhooks")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::max_age;

    #[test]
    fn max_age_anywhere_in_the_header() {
        assert_eq!(max_age("max-age=30"), Some(30));
        assert_eq!(max_age("no-cache, private, max-age=30"), Some(30));
        assert_eq!(max_age("Max-Age=5, public"), Some(5));
        assert_eq!(max_age("max-age=abc"), None);
        assert_eq!(max_age("max-age=x, max-age=7"), Some(7));
        assert_eq!(max_age("no-store"), None);
    }
}
