//! The Graphite reporter (`graphite_enabled`, `graphite_host`, `graphite_port`,
//! `graphite_interval`, `graphite_prefix`, `graphite_api_key`): every interval, one line per
//! counter, `<api key.><prefix.><name> <value> <unix time>`, over one TCP connection to
//! Graphite's plaintext port, opened again after a failure. A Graphite that is down costs a
//! connection attempt per interval and a log line; the broker never waits for it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::Graphite;
use crate::engine::Engine;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The lines of one report.
pub fn lines(config: &Graphite, values: &[(&str, u64)], unix_time: u64) -> String {
    let mut prefix = String::new();
    for part in [&config.api_key, &config.prefix].into_iter().flatten() {
        prefix.push_str(part);
        prefix.push('.');
    }
    values
        .iter()
        .map(|(name, value)| format!("{prefix}{name} {value} {unix_time}\n"))
        .collect()
}

/// Reports every interval until the broker stops; returns at once when it is off.
pub async fn run(engine: Arc<Engine>) {
    let config = engine.config().graphite.clone();
    if !config.enabled {
        return;
    }
    let addr = format!("{}:{}", config.host, config.port);
    let start = tokio::time::Instant::now() + config.interval;
    let mut tick = tokio::time::interval_at(start, config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<TcpStream> = None;
    loop {
        tokio::select! {
            () = engine.stopping().cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let report = lines(&config, &super::values(&engine), now);
        if conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => tracing::warn!(%addr, error = %e, "Graphite unreachable"),
                Err(_) => tracing::warn!(%addr, "Graphite connect timed out"),
            }
        }
        if let Some(c) = &mut conn {
            let sent = tokio::select! {
                () = engine.stopping().cancelled() => return,
                r = c.write_all(report.as_bytes()) => r,
            };
            if let Err(e) = sent {
                tracing::warn!(%addr, error = %e, "Graphite connection lost; reconnecting next time");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_lines_with_key_and_prefix() {
        let config = Graphite {
            prefix: Some("vmq".into()),
            api_key: Some("k3y".into()),
            ..Graphite::default()
        };
        assert_eq!(
            lines(
                &config,
                &[("socket_open", 3), ("mqtt_publish_received", 7)],
                1_700_000_000
            ),
            "k3y.vmq.socket_open 3 1700000000\nk3y.vmq.mqtt_publish_received 7 1700000000\n"
        );
        assert_eq!(
            lines(&Graphite::default(), &[("socket_open", 3)], 1),
            "socket_open 3 1\n"
        );
    }
}
